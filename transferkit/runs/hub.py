"""A run directory on the Hugging Face Hub: ``transferkit push`` and ``tk.load("hf://...")``.

A run folder is uploaded as it is (its ``README.md`` is the Hub's model card, see
:mod:`.hub_card`), less the write lock and the training checkpoints.  Loading downloads the
repository's snapshot with ``huggingface_hub.snapshot_download`` (or finds it in the Hub's
cache; with ``HF_HUB_OFFLINE=1`` only there) and then loads that folder like any local run:
the same hash checks, no pickle, no code from the card.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import UserInputError, shown
from .hub_card import README, hub_readme
from .rundir import LOCK, RunDir

SCHEME = "hf://"
#: What a run folder holds that is not part of the model: the write lock, training checkpoints.
NOT_UPLOADED = [LOCK, "checkpoints/*", "**/checkpoints/*", "**/" + LOCK]
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")


def is_hub_uri(path: str | os.PathLike) -> bool:
    return isinstance(path, str) and path.startswith(SCHEME)


def parse_uri(uri: str) -> tuple[str, str | None]:
    """``hf://owner/name[@revision]`` -> ``(repo_id, revision or None)``."""
    repo_id, _, revision = uri[len(SCHEME):].partition("@")
    if not _REPO_ID.match(repo_id) or ".." in repo_id:
        raise UserInputError(f"{uri!r} is not a Hub model address",
                             hint="write hf://OWNER/NAME, or hf://OWNER/NAME@REVISION for a branch, tag or commit")
    return repo_id, revision or None


def snapshot(uri: str) -> Path:
    """The local folder of the Hub repository ``uri`` names: downloaded, or found in the Hub's
    cache (the only place looked in with ``HF_HUB_OFFLINE=1``)."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    repo_id, revision = parse_uri(uri)
    try:
        return Path(snapshot_download(repo_id, revision=revision, repo_type="model"))
    except LocalEntryNotFoundError:
        offline = " and HF_HUB_OFFLINE=1 forbids downloading" if constants.HF_HUB_OFFLINE else \
            " and the Hub could not be reached"
        raise UserInputError(f"{uri} is not in the Hub cache ({shown(constants.HF_HUB_CACHE)}){offline}",
                             hint="connect and unset HF_HUB_OFFLINE to download it once, or load a local copy "
                                  "of the run folder") from None
    except RepositoryNotFoundError:
        raise UserInputError(f"{uri}: no such model repository on the Hub (or it is private)",
                             hint="check the name; for a private repository log in (hf auth login) or set "
                                  "HF_TOKEN") from None
    except HfHubHTTPError as e:
        raise UserInputError(f"{uri}: the Hub refused the download: {e}") from None


def push(run_dir: str | os.PathLike, repo_id: str, *, token: str | None = None, private: bool = False,
         log=print) -> str:
    """Upload a finished run folder to the Hub model repository ``repo_id`` (created if absent).

    Returns:
        The repository's URL.

    Raises:
        UserInputError: not a finished run, a bad repository id, offline mode, no token, or the
            Hub refused the upload.
    """
    import httpx
    import huggingface_hub
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError

    rd = RunDir(run_dir)
    card = rd.card()  # a finished run, or a clear error
    parse_uri(SCHEME + repo_id)
    if isinstance(card.get("multi_task"), dict):  # tk.load takes one column's run, not the whole folder
        dirs = ", ".join(shown(rd.path / str((e or {}).get("dir"))) for e in card["multi_task"].values())
        raise UserInputError(f"{shown(rd.path)} is a multi-task run: each label column's model is a run of its own",
                             hint=f"push each column's run ({dirs}) to a repository of its own")
    if constants.HF_HUB_OFFLINE:
        raise UserInputError("cannot push: HF_HUB_OFFLINE is set, so nothing may reach the Hub",
                             hint="unset HF_HUB_OFFLINE (and connect) to upload")
    token = token or huggingface_hub.get_token()
    if not token:
        raise UserInputError("cannot push: no Hugging Face token",
                             hint="log in with `hf auth login`, set HF_TOKEN, or pass --token")
    if not rd.file(README).is_file():  # a run written before runs carried one
        rd.write_text(README, hub_readme(card, rd.metrics() or {}, name=repo_id.split("/")[1]))
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        log(f"uploading {shown(rd.path)} to {repo_id} …")
        api.upload_folder(folder_path=str(rd.path), repo_id=repo_id, repo_type="model",
                          ignore_patterns=NOT_UPLOADED, commit_message="transferkit push")
    except HfHubHTTPError as e:
        raise UserInputError(f"the Hub refused the upload to {repo_id}: {e}",
                             hint="check that the token may write to that repository") from None
    except (OSError, httpx.TransportError) as e:  # no network: connection refused, name resolution
        raise UserInputError(f"cannot reach the Hub to push {repo_id}: {e}",
                             hint="check the network connection (and any proxy), then retry") from None
    return f"{constants.ENDPOINT}/{repo_id}"
