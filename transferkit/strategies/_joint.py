"""Several tasks on one backbone: the joint fit of the fine-tuning family (``FineTune.fit_joint``).

Multi-task learning with hard parameter sharing (Caruana, "Multitask Learning", Machine Learning
1997; Ruder, "An Overview of Multi-Task Learning in Deep Neural Networks", 2017): one backbone,
one head per task, trained through the one training loop on the weighted sum of the tasks' losses.
Regression losses are on the standardised target (:mod:`._task_head`), so that equal weights
give each task a comparable share of the gradient whatever the target's unit.

The fit is run by the first task's model (its hooks: lp-ft's probe, l2sp's anchors, lora's
adapters act on every head); the others then take the shared backbone and their own head.
"""
from __future__ import annotations

from typing import Any

from ..data.dataset import Dataset
from ..errors import UserInputError
from ..tasks import get_task
from ._task_head import HeadRun, make_task_head
from .base import task_classes
from .probe import task_class_weights


def check_task_weights(value: Any) -> str | None:
    """A ``check`` for ``task_weights``: ``{task: weight >= 0}``, not all 0."""
    if isinstance(value, dict):
        ok = value and all(not isinstance(v, bool) and isinstance(v, (int, float)) and 0 <= v < float("inf")
                           for v in value.values()) and any(v > 0 for v in value.values())
        if not ok:
            return "null or a non-empty {label column: weight >= 0}, at least one weight above 0"
    return None


def resolve_task_weights(keys: list[str], spec: dict | None) -> dict[str, float]:
    """``{key: weight}`` for every task: ``spec``'s weights (tasks it does not name: 1), or 1 each.

    Raises:
        UserInputError: ``spec`` names a task that is not trained, or gives no task a positive weight.
    """
    if spec is None:
        return {k: 1.0 for k in keys}
    problem = check_task_weights(spec)
    if problem is not None:
        raise UserInputError(f"task_weights={spec!r}: use {problem}", hint='e.g. {"label": 1, "group": 0.5}')
    unknown = sorted(str(k) for k in spec if k not in keys)
    if unknown:
        raise UserInputError(f"task_weights names {', '.join(repr(u) for u in unknown)}, which "
                             f"{'is' if len(unknown) == 1 else 'are'} not among the tasks trained together",
                             hint=f"the tasks are: {', '.join(keys)}")
    weights = {k: float(spec.get(k, 1.0)) for k in keys}
    if not any(w > 0 for w in weights.values()):
        raise UserInputError(f"task_weights={spec!r} gives every task weight 0: nothing would train",
                             hint="give at least one task a positive weight")
    return weights
def check_joint_data(datasets: dict[str, Any]) -> None:
    """The data sets of a joint fit hold the same items in the same order, each with labels.

    Raises:
        UserInputError: no data set, an unlabelled one, or items that differ.
    """
    if not datasets:
        raise UserInputError("a joint fit needs at least one labelled data set, one per task")
    keys = list(datasets)
    first = datasets[keys[0]]
    for k in keys:
        ds = datasets[k]
        if not ds.labels:
            raise UserInputError(f"the data of task {k!r} has no labels")
        if ds.modality != first.modality or len(ds) != len(first) or (
                ds.inputs is not first.inputs and ds.content_hashes() != first.content_hashes()):
            raise UserInputError(f"the data of task {k!r} does not hold the items of task {keys[0]!r} in the same "
                                 "order: a joint fit trains one backbone on the same items, each with one label per "
                                 "task", hint="build every task's Dataset from the same rows")


def joint_class_weight(spec: Any, task: str, classes: list[str], every_class: set[str]) -> Any:
    """The part of one ``class_weight`` option that applies to one task of a joint fit: all of
    ``balanced`` for a task with classes (labels), the entries of a dict that name its classes,
    nothing for regression.

    Raises:
        UserInputError: a dict entry that names a class (label) of no task.
    """
    if spec is None or task == "regression":
        return None
    if not isinstance(spec, dict):
        return spec
    unknown = sorted(str(k) for k in spec if str(k) not in every_class)
    if unknown:
        raise UserInputError(f"class_weight names {', '.join(repr(u) for u in unknown)}, which no task trained "
                             "together has as a class or label", hint=f"they are: {', '.join(sorted(every_class))}")
    own = {k: v for k, v in spec.items() if str(k) in classes}
    return own or None


def fit_joint(strategy: Any, datasets: dict[str, Dataset], ctx: Any,
              task_weights: dict[str, float] | None = None) -> dict[str, Any]:
    """:meth:`FineTune.fit_joint` (see there): one model per task, sharing one trained backbone."""
    check_joint_data(datasets)
    keys = list(datasets)
    weights = resolve_task_weights(keys, task_weights if task_weights is not None else strategy.task_weights)
    classes = {}
    for k in keys:
        strategy.check_task(datasets[k].task)
        classes[k] = task_classes(k, datasets[k])
    every_class = {c for cs in classes.values() for c in cs}
    members = {k: strategy.clone() for k in keys}
    runs, ys = [], {}
    for k in keys:
        data, member = datasets[k], members[k]
        member.task_, member.classes_, member.thresholds_ = data.task, classes[k], None
        y = ys[k] = get_task(data.task).encode(list(data.labels), classes[k])
        spec = joint_class_weight(strategy.class_weight, data.task, classes[k], every_class)
        member.loss_weight_ = task_class_weights(strategy.name, spec, data.task, y, classes[k])
        runs.append(HeadRun(k, member, data, make_task_head(data.task, classes[k], member.loss_weight_),
                            weight=weights[k]))
    if strategy.class_weight is not None and any(r.unit.task == "regression" for r in runs):
        ctx.notes.append(f"{strategy.name}: class_weight applies to the tasks with classes; the regression tasks "
                         "trained together are unweighted.")
    driver = members[keys[0]]
    driver._joint = runs
    try:
        driver._fit(datasets[keys[0]], ys[keys[0]], ctx)
    finally:
        driver._joint = None
    shared = dict(driver.info_)
    history = shared.get("history", [])
    validation = {r.key: [{m: h[f"val_{r.key}.{m}"] for m in ("loss", r.unit.metric) if f"val_{r.key}.{m}" in h}
                          for h in history] for r in runs}
    joint = {"tasks": {k: datasets[k].task for k in keys}, "task_weights": weights, "validation": validation}
    for r in runs:
        member = r.member
        member._share_fit(driver)
        member.info_ = {**shared, **r.facts, "joint": {**joint, "task": r.key}}
        member._peers = list(members.values())
        member.fitted_ = True
    return members
