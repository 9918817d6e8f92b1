"""Hugging Face transformers models as backbones: text, image and audio.

Offline first: a local directory, or a hub id already in the local cache, never touches the
network.  Weights load from safetensors only, unless the user passes ``allow_pickle=True``;
``trust_remote_code`` is never set unless the user asks.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from .._files import files_sha256
from .._memory import release_free_memory
from ..errors import MissingDependencyError, UnsafeFileError, UserInputError, shown
from ._tokenizer_facts import tokenizer_facts
from .base import Backbone, Batch, pool_chunks

PICKLE_WEIGHTS = ("pytorch_model.bin", "tf_model.h5", "model.ckpt.index", "flax_model.msgpack")


def resolve_model_dir(name_or_path: str, *, allow_pickle: bool = False, revision: str | None = None) -> Path:
    """A local directory holding the model's files.

    A directory is used as it is; a hub id is looked up in the local cache first and only
    downloaded when that fails and the network is allowed (``HF_HUB_OFFLINE`` unset).
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise UserInputError(f"{name_or_path} is a file, not a model directory",
                             hint="give the folder that holds config.json and the weights")
    if "/" not in name_or_path and not name_or_path.replace("-", "").replace("_", "").isalnum():
        raise UserInputError(f"{name_or_path!r} is neither a model directory nor a hub id")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover - transformers depends on it
        raise MissingDependencyError("loading from the Hugging Face hub", "huggingface_hub") from e
    patterns = (["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.py"]
                + (["*.bin"] if allow_pickle else []))
    try:
        return Path(snapshot_download(name_or_path, revision=revision, local_files_only=True,
                                      allow_patterns=patterns))
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise UserInputError(
            f"model {name_or_path!r} is not a local directory and not in the Hugging Face cache, "
            "and HF_HUB_OFFLINE is set",
            hint="download it once where there is a network (huggingface-cli download NAME), "
                 "or pass a local directory, or use a bundled name from `transferkit models`")
    try:
        return Path(snapshot_download(name_or_path, revision=revision, allow_patterns=patterns))
    except Exception as e:
        raise UserInputError(
            f"could not load model {name_or_path!r}: not a local directory, not cached, and the "
            f"download failed ({type(e).__name__})",
            hint="check the name, pass a local directory, or use a bundled name from `transferkit models`",
        ) from None


def weight_files(model_dir: Path, allow_pickle: bool) -> list[Path]:
    """The weight files of a model directory; refuses pickle-only models unless allowed."""
    st = sorted(model_dir.glob("*.safetensors"))
    if st:
        return st
    pickled = [model_dir / n for n in PICKLE_WEIGHTS if (model_dir / n).exists()]
    pickled += sorted(model_dir.glob("pytorch_model-*.bin"))
    if pickled and not allow_pickle:
        raise UnsafeFileError(
            f"{pickled[0]} holds pickled weights, which can run arbitrary code when loaded",
            hint="convert the model to safetensors, or pass allow_pickle=True (--allow-pickle) "
                 "if you trust its source")
    if not pickled:
        raise UserInputError(f"no weight files (*.safetensors) in {model_dir}",
                             hint="the folder must hold config.json and model.safetensors")
    return pickled


def block_list(module: nn.Module) -> tuple[str | None, nn.ModuleList | None]:
    """The largest ``nn.ModuleList`` of a model (its transformer layers or conv stages) and its name."""
    best_name, best, best_n = None, None, 0
    for name, sub in module.named_modules():
        if isinstance(sub, nn.ModuleList) and len(sub) >= 1:  # one block is left after truncation
            n = sum(p.numel() for p in sub.parameters())
            if n > best_n:
                best_name, best, best_n = name, sub, n
    return best_name, best


def truncate_blocks(module: nn.Module, layer: int) -> int | None:
    """Drop the blocks after hidden state ``layer`` (0 = embeddings; negative counts from the
    end): they never touch that hidden state, so features are unchanged and a forward pass
    costs ``layer / n`` of the full model's blocks.  Returns the positive index of the hidden
    state to read afterwards, or ``None`` when nothing was cut (no block list, last layer, or
    out of range: the caller reports that)."""
    name, blocks = block_list(module)
    if blocks is None or not name:
        return None
    n = len(blocks)
    k = layer if layer >= 0 else n + 1 + layer
    if not 1 <= k < n:  # layer 0 (the embeddings) keeps one block: some models return no states without
        return None
    parent_name, _, attr = name.rpartition(".")
    parent = module.get_submodule(parent_name) if parent_name else module
    setattr(parent, attr, nn.ModuleList(list(blocks)[:k]))
    cfg = getattr(module, "config", None)
    if cfg is not None and getattr(cfg, "num_hidden_layers", None) == n:
        cfg.num_hidden_layers = k
        if isinstance(getattr(cfg, "layer_types", None), list) and len(cfg.layer_types) == n:
            cfg.layer_types = cfg.layer_types[:k]
    return k


def layer_groups_of(module: nn.Module) -> list[tuple[str, list[nn.Parameter]]]:
    """Split a model's parameters into [embeddings, block 0, ..., block N-1, head].

    The blocks are the elements of the largest ``nn.ModuleList`` (transformer layers, conv
    stages), found without knowing the architecture.
    """
    best_name, _ = block_list(module)
    params = list(module.named_parameters())
    if best_name is None:
        return [("all", [p for _, p in params])]
    prefix = best_name + "." if best_name else ""
    n_blocks = len(module.get_submodule(best_name))
    groups: list[tuple[str, list[nn.Parameter]]] = [("embeddings", [])]
    groups += [(f"{best_name}.{i}", []) for i in range(n_blocks)]
    groups.append(("head", []))
    seen_block = False
    for name, p in params:
        if name.startswith(prefix):
            i = int(name[len(prefix):].split(".", 1)[0])
            groups[1 + i][1].append(p)
            seen_block = True
        else:
            groups[-1 if seen_block else 0][1].append(p)
    return [g for g in groups if g[1]]


class HFBackbone(Backbone):
    """Common loading for transformers models (see :func:`get_backbone` for options)."""

    def __init__(self, name: str, *, layer: int | str | None = None, pooling: str | None = None,
                 init: str = "pretrained", allow_pickle: bool = False, trust_remote_code: bool = False,
                 revision: str | None = None, model_dir: Path | None = None):
        super().__init__(name, layer=layer, pooling=pooling, init=init)
        self.allow_pickle = allow_pickle
        self.trust_remote_code = trust_remote_code
        self.revision = revision
        self.model_dir = model_dir or resolve_model_dir(name, allow_pickle=allow_pickle, revision=revision)
        self._config = None

    @contextlib.contextmanager
    def _loading(self) -> Iterator[None]:
        """Around every transformers load: a repository that ships its own Python code is refused
        with a clear message unless the user passed trust_remote_code (transformers raises a
        ValueError before it runs any of that code)."""
        try:
            yield
        except ValueError as e:
            if self.trust_remote_code or not ("trust_remote_code" in str(e) or "custom code" in str(e)):
                raise
            code = sorted(p.name for p in Path(self.model_dir).glob("*.py"))
            raise UserInputError(
                f"the model in {shown(self.model_dir)} needs its own Python code to load"
                + (f" ({', '.join(code)})" if code else ""),
                hint="if you trust that code, pass --trust-remote-code (trust_remote_code=True): it will run it"
            ) from None

    @property
    def config(self):
        if self._config is None:
            from transformers import AutoConfig

            with self._loading():
                self._config = AutoConfig.from_pretrained(self.model_dir, local_files_only=True,
                                                          trust_remote_code=self.trust_remote_code)
        return self._config

    def _options(self) -> dict[str, Any]:
        return dict(layer=self.layer, pooling=self.pooling, allow_pickle=self.allow_pickle,
                    trust_remote_code=self.trust_remote_code, revision=self.revision, model_dir=self.model_dir)

    def randomized(self, seed: int = 0) -> "HFBackbone":
        opts = self._options()
        return type(self)(self.name, init=f"random:{seed}", **opts)

    def weights_sha256(self) -> str:
        return files_sha256(weight_files(self.model_dir, self.allow_pickle))

    def _load_module(self) -> nn.Module:
        from transformers import AutoModel

        if self.init.startswith("random:"):
            import copy

            torch.manual_seed(int(self.init.split(":", 1)[1]))
            module = AutoModel.from_config(copy.deepcopy(self.config), trust_remote_code=self.trust_remote_code)
        else:
            weight_files(self.model_dir, self.allow_pickle)  # refuses pickle before transformers sees it
            from transformers.utils import logging as hf_logging

            bar = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()  # a bar per model load drowns our own progress lines
            try:
                with self._loading():
                    module = AutoModel.from_pretrained(
                        self.model_dir, local_files_only=True, trust_remote_code=self.trust_remote_code,
                        use_safetensors=None if self.allow_pickle else True)
            finally:
                if bar:
                    hf_logging.enable_progress_bar()
        # An intermediate layer: the blocks above it are never used, so they are not kept
        # (faster extraction; a fine-tuned or distilled student trains and stores only these).
        self._hidden_index = truncate_blocks(module, self.layer) if self.layer is not None else None
        return module

    def layer_groups(self) -> list[tuple[str, list[nn.Parameter]]]:
        return layer_groups_of(self.module)

    @property
    def num_features(self) -> int:
        cfg = self.config
        for attr in ("hidden_size", "d_model", "embed_dim"):
            if isinstance(getattr(cfg, attr, None), int):
                return getattr(cfg, attr)
        sizes = getattr(cfg, "hidden_sizes", None)
        if sizes:
            return sizes[-1] if self.layer is None else sizes[max(self.layer - 1, 0)]
        raise UserInputError(f"cannot tell the feature width of {self.name}")

    def _hidden(self, out) -> torch.Tensor:
        if self.layer is None:
            return out.last_hidden_state
        hs = out.hidden_states
        k = getattr(self, "_hidden_index", None)
        if k is not None:
            return hs[k]
        if not -len(hs) <= self.layer < len(hs):
            raise UserInputError(f"layer {self.layer} is out of range for {self.name}: it has "
                                 f"{len(hs)} hidden states (0 = embeddings, {len(hs) - 1} = last)")
        return hs[self.layer]


class HFTextBackbone(HFBackbone):
    """A transformers text encoder; long texts are embedded in chunks and pooled.

    Args:
        max_length: tokens per chunk, special tokens included (default: the model's
            sentence-transformers ``max_seq_length``, else its position limit).
        max_chunks: chunks per text at most (0: no limit); beyond that a text is cut and the
            run's notes say how many were.
    """

    modality = "text"

    def __init__(self, name: str, *, max_length: int | None = None, max_chunks: int = 8,
                 chunk_batch: int = 32, **kw):
        super().__init__(name, **kw)
        self._tokenizer = None
        self.max_chunks = max_chunks
        self.chunk_batch = chunk_batch
        self.max_length = max_length or self._default_max_length()
        if self.pooling is None:
            self.pooling = self._default_pooling()
        if self.pooling not in ("mean", "cls"):
            raise UserInputError(f"pooling must be 'mean' or 'cls' for text, not {self.pooling!r}")

    def _options(self) -> dict[str, Any]:
        return dict(super()._options(), max_length=self.max_length, max_chunks=self.max_chunks,
                    chunk_batch=self.chunk_batch)

    def _default_max_length(self) -> int:
        sb = self.model_dir / "sentence_bert_config.json"
        if sb.exists():
            n = json.loads(sb.read_text()).get("max_seq_length")
            if n:
                return int(n)
        limit = getattr(self.config, "max_position_embeddings", 512) or 512
        if getattr(self.config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
            limit -= 2  # their positions start after the padding index
        return int(min(limit, 512))

    def _default_pooling(self) -> str:
        pc = self.model_dir / "1_Pooling" / "config.json"
        if pc.exists() and json.loads(pc.read_text()).get("pooling_mode_cls_token"):
            return "cls"
        return "mean"

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            with self._loading():
                self._tokenizer = AutoTokenizer.from_pretrained(
                    self.model_dir, local_files_only=True, trust_remote_code=self.trust_remote_code)
        return self._tokenizer

    def tokenizer_facts(self) -> dict[str, Any]:
        """Class name, lowercase flag and special ids of the tokenizer, without building it when
        an earlier run memoised them (:mod:`._tokenizer_facts`): a fully cached fit needs no more."""
        if not hasattr(self, "_facts"):
            self._facts = tokenizer_facts(self.model_dir, self.trust_remote_code, lambda: self.tokenizer)
        return self._facts

    def special_tokens(self) -> tuple[list[int], list[int]]:
        """The ids the tokenizer puts before and after one sequence ([CLS] / [SEP] for BERT)."""
        facts = self.tokenizer_facts()
        return list(facts["prefix"]), list(facts["suffix"])

    def chunk_room(self) -> int:
        """Content tokens that fit in one chunk."""
        prefix, suffix = self.special_tokens()
        return self.max_length - len(prefix) - len(suffix)

    def preprocessing(self) -> dict[str, Any]:
        return {"max_length": self.max_length, "max_chunks": self.max_chunks,
                "tokenizer": self.tokenizer_facts()["tokenizer"], "lowercase": self.tokenizer_facts()["lowercase"]}

    def sort_key(self, item: Any) -> float:
        return float(len(item))

    def units_name(self) -> str:
        return "tokens"

    def pool_items(self, batch_size: int) -> int:
        # Chunks of 256 items are sorted together and run chunk_batch at a time: windows of
        # equal width meet in one forward pass, as if sorted over the whole data set, while the
        # token ids held at once stay bounded (256 items x max_chunks windows).
        return max(batch_size, 256)

    def prepare(self, items: list[Any]) -> Batch:
        tok = self.tokenizer
        ids_all = tok(list(items), add_special_tokens=False, truncation=False, verbose=False,
                      return_attention_mask=False)["input_ids"]
        prefix, suffix = self.special_tokens()
        room = self.chunk_room()
        chunks, owner, weights, units = [], [], [], np.zeros((len(items), 2), dtype=np.int64)
        for i, ids in enumerate(ids_all):
            pieces = [ids[j:j + room] for j in range(0, len(ids), room)] or [[]]
            if self.max_chunks and len(pieces) > self.max_chunks:
                pieces = pieces[: self.max_chunks]
            for p in pieces:
                chunks.append(prefix + p + suffix)
                owner.append(i)
                weights.append(max(len(p), 1))
            units[i] = (sum(len(p) for p in pieces), len(ids))
        # Longest first, so forward_features can cut padding group by group.
        order = sorted(range(len(chunks)), key=lambda c: -len(chunks[c]))
        padded = tok.pad({"input_ids": [chunks[c] for c in order]}, return_tensors="pt",
                         return_attention_mask=True)
        return Batch(
            tensors={"input_ids": padded["input_ids"], "attention_mask": padded["attention_mask"],
                     "weights": torch.tensor([weights[c] for c in order])},
            n_items=len(items), owner=torch.tensor([owner[c] for c in order]), units=units)

    def forward_features(self, batch: Batch) -> torch.Tensor:
        ids, mask = batch.tensors["input_ids"], batch.tensors["attention_mask"]
        feats = []
        for s in range(0, ids.shape[0], self.chunk_batch):
            m = mask[s:s + self.chunk_batch]
            width = int(m.sum(1).max())
            out = self.module(input_ids=ids[s:s + self.chunk_batch, :width], attention_mask=m[:, :width],
                              output_hidden_states=self.layer is not None)
            h = self._hidden(out)
            m = m[:, :width]
            if self.pooling == "cls":
                feats.append(h[:, 0])
            else:
                mf = m.unsqueeze(-1).to(h.dtype)
                feats.append((h * mf).sum(1) / mf.sum(1).clamp_min(1.0))
            if not torch.is_grad_enabled():
                release_free_memory()  # widths vary from group to group: see _memory.py
        chunk_feats = torch.cat(feats)
        return pool_chunks(chunk_feats, batch.owner, batch.tensors["weights"], batch.n_items)


class HFImageBackbone(HFBackbone):
    """A transformers vision model with its image processor (PIL path, no torchvision)."""

    modality = "image"

    def __init__(self, name: str, **kw):
        super().__init__(name, **kw)
        self._processor = None

    @property
    def processor(self):
        if self._processor is None:
            from transformers import AutoImageProcessor

            with self._loading():
                self._processor = AutoImageProcessor.from_pretrained(
                    self.model_dir, local_files_only=True, trust_remote_code=self.trust_remote_code,
                    use_fast=False)
        return self._processor

    def preprocessing(self) -> dict[str, Any]:
        d = self.processor.to_dict()
        return {k: d.get(k) for k in ("image_processor_type", "size", "crop_size", "do_resize", "do_center_crop",
                                     "do_normalize", "image_mean", "image_std", "resample", "rescale_factor")
                if k in d}

    def prepare(self, items: list[Any]) -> Batch:
        from ..data import load_image

        images = [load_image(x) for x in items]
        px = self.processor(images=images, return_tensors="pt")["pixel_values"]
        return Batch(tensors={"pixel_values": px}, n_items=len(items))

    def forward_features(self, batch: Batch) -> torch.Tensor:
        out = self.module(pixel_values=batch.tensors["pixel_values"], output_hidden_states=self.layer is not None)
        pooled = getattr(out, "pooler_output", None)
        if self.layer is None and self.pooling in (None, "pooler") and pooled is not None:
            return pooled.flatten(1)
        h = self._hidden(out)
        if h.dim() == 4:  # conv nets: (B, C, H, W)
            return h.mean(dim=(2, 3))
        return h[:, 0] if self.pooling == "cls" else h.mean(1)

    def source_head(self) -> nn.Module | None:
        return None


class HFAudioBackbone(HFBackbone):
    """A transformers audio encoder (wav2vec2, HuBERT, AST...) with its feature extractor.

    Args:
        max_seconds: clips are cut to this length; the run's notes say how many were.
    """

    modality = "audio"

    def __init__(self, name: str, *, max_seconds: float = 30.0, **kw):
        super().__init__(name, **kw)
        self.max_seconds = max_seconds
        self._extractor = None

    def _options(self) -> dict[str, Any]:
        return dict(super()._options(), max_seconds=self.max_seconds)

    @property
    def extractor(self):
        if self._extractor is None:
            from transformers import AutoFeatureExtractor

            with self._loading():
                self._extractor = AutoFeatureExtractor.from_pretrained(
                    self.model_dir, local_files_only=True, trust_remote_code=self.trust_remote_code)
        return self._extractor

    def preprocessing(self) -> dict[str, Any]:
        d = self.extractor.to_dict()
        keep = ("feature_extractor_type", "sampling_rate", "do_normalize", "feature_size", "num_mel_bins")
        return dict({k: d.get(k) for k in keep if k in d}, max_seconds=self.max_seconds)

    def units_name(self) -> str:
        return "samples"

    def prepare(self, items: list[Any]) -> Batch:
        from ..data import load_audio, resample

        sr = int(self.extractor.sampling_rate)
        waves, units = [], np.zeros((len(items), 2), dtype=np.int64)
        for i, x in enumerate(items):
            # An in-memory clip comes as (array, rate); a bare array is taken to be at the model's rate.
            w, rate = load_audio(x[0], x[1]) if isinstance(x, tuple) else load_audio(x, sr)
            w = resample(w, rate, sr)
            cap = int(self.max_seconds * sr)
            units[i] = (min(len(w), cap), len(w))
            waves.append(w[:cap])
        enc = self.extractor(waves, sampling_rate=sr, return_tensors="pt", padding=True,
                             return_attention_mask=True)
        return Batch(tensors=dict(enc), n_items=len(items), units=units)

    def forward_features(self, batch: Batch) -> torch.Tensor:
        t = dict(batch.tensors)
        mask = t.get("attention_mask")
        out = self.module(**t, output_hidden_states=self.layer is not None)
        h = self._hidden(out)
        if mask is not None and hasattr(self.module, "_get_feat_extract_output_lengths") and h.dim() == 3:
            lengths = self.module._get_feat_extract_output_lengths(mask.sum(-1)).clamp(1, h.shape[1])
            frame_mask = (torch.arange(h.shape[1])[None, :] < lengths[:, None]).to(h.dtype).unsqueeze(-1)
            return (h * frame_mask).sum(1) / frame_mask.sum(1)
        return h.mean(1) if h.dim() == 3 else h.flatten(1)


def hf_backbone(name_or_path: str, *, modality: str | None = None, **kw) -> HFBackbone:
    """Pick the text, image or audio adapter from the model directory's files and config."""
    kw.setdefault("allow_pickle", False)
    model_dir = resolve_model_dir(name_or_path, allow_pickle=kw["allow_pickle"], revision=kw.get("revision"))
    if modality is None:
        if (model_dir / "preprocessor_config.json").exists():
            cfg = json.loads((model_dir / "preprocessor_config.json").read_text())
            kind = str(cfg.get("feature_extractor_type", "")) + str(cfg.get("image_processor_type", ""))
            modality = "image" if "Image" in kind or "image_mean" in cfg else "audio"
        else:
            modality = "text"
    cls = {"text": HFTextBackbone, "image": HFImageBackbone, "audio": HFAudioBackbone}[modality]
    return cls(name_or_path, model_dir=model_dir, **kw)
