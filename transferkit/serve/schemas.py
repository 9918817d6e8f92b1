"""Response models and the /predict request documentation of the OpenAPI schema."""
from __future__ import annotations

from pydantic import BaseModel, Field

from ..tasks import get_task


class Prediction(BaseModel):
    """A classification run's answer for one item."""

    label: str = Field(description="the most probable class")
    confidence: float = Field(description="its probability")
    probabilities: dict[str, float] = Field(description="probability of every class")


class ValuePrediction(BaseModel):
    """A regression run's answer for one item."""

    value: float = Field(description="the predicted number, in the training target's units")


class LabelSetPrediction(BaseModel):
    """A multi-label run's answer for one item."""

    labels: list[str] = Field(description="the labels whose probability reaches their threshold (see /metadata "
                                          "`thresholds`), sorted; possibly none")
    probabilities: dict[str, float] = Field(description="probability of every label (each on its own: they do not "
                                                        "sum to one)")


class PredictResponse(BaseModel):
    """Classification and multi-label runs answer ``classes`` and ``predictions``; regression
    runs only ``predictions`` (``{"value": ...}`` per item)."""

    classes: list[str] | None = Field(None, description="class names (multi-label: label names), in the order of "
                                                        "the model's probability columns; absent for regression")
    predictions: list[Prediction | LabelSetPrediction | ValuePrediction] = Field(
        description="one per item, in request order: per the run's task (/metadata `task`)")


def predictions(task: str, outputs, classes: list[str], thresholds=None) -> dict:
    """The /predict body for a batch's outputs: classification ``(N, C)`` probabilities, regression
    ``(N,)`` values, multi-label ``(N, L)`` probabilities decided with ``thresholds (L,)``."""
    if task == "regression":
        return {"predictions": [{"value": float(v)} for v in outputs]}
    if task == "multi-label":
        decided = get_task(task).decide(outputs, thresholds, classes=classes)
        return {"classes": classes, "predictions": [
            {"labels": list(names), "probabilities": {c: float(v) for c, v in zip(classes, p)}}
            for names, p in zip(decided, outputs)]}
    preds = []
    for p in outputs:
        k = int(p.argmax())
        preds.append({"label": classes[k], "confidence": float(p[k]),
                      "probabilities": {c: float(v) for c, v in zip(classes, p)}})
    return {"classes": classes, "predictions": preds}


# /predict reads its body itself (JSON for text runs, multipart for image runs), with limits
# checked while reading; this documents both forms.
PREDICT_OPENAPI = {
    "requestBody": {
        "required": True,
        "description": "Text runs: JSON `{\"texts\": [...]}`. Image runs: multipart/form-data with one or more "
                       "files in the field `files`. Limits: see /metadata `settings`.",
        "content": {
            "application/json": {"schema": {
                "type": "object", "required": ["texts"], "additionalProperties": False,
                "properties": {"texts": {"type": "array", "items": {"type": "string"}, "minItems": 1}},
                "example": {"texts": ["WIN A FREE CRUISE!!!", "Minutes of Tuesday's meeting attached"]}}},
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["files"],
                "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
        },
    },
    "responses": {
        "400": {"description": "malformed JSON (also: nested more than 32 levels) or multipart body"},
        "413": {"description": "body over the size limit"},
        "415": {"description": "wrong content type for this model"},
        "422": {"description": "empty batch, too many items, text too long, empty or not Unicode (a lone "
                               "surrogate), not an image, image too large, too many pixels in all"},
        "503": {"description": "not ready, or at capacity (queue full, an answer would come after the timeout, "
                               "timeout, too many connections): retry after Retry-After"},
    },
}
