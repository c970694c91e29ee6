"""The CLIP image and text towers (open_clip), with the model's own eval preprocessing and L2-normalised outputs.

Weights (``pretrained``):

- an open_clip tag (``"openai"``, ``"laion2b_s34b_b79k"``, ...): open_clip downloads or finds them in its cache.
  Without a network (``HF_HUB_OFFLINE=1``, or the hub's host not answering a 1.5 s connection probe) only the cache
  is tried, and weights not in it fail at once with one line naming ``--pretrained none`` and local checkpoints,
  instead of a minute of download retries;
- a local checkpoint path, or any :mod:`vmr.storage` URI (``s3://models/clip.pt``), spilled to local disk first and
  loaded with open_clip's own checkpoint loading (for air-gapped clusters);
- ``"none"``: random initialisation from ``torch.manual_seed(seed)``, identical in every process on the same
  PyTorch version. Tests and the offline demo use it; a loud warning says that the features are meaningless.

One model per encoder, in eval mode; everything runs under ``torch.inference_mode()``.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import tempfile
import threading
from urllib.parse import urlsplit

import numpy as np
import torch

from vmr import storage
from vmr.errors import ConfigError, InputError, ServiceUnavailable
from vmr.log_filters import without_log_message

log = logging.getLogger(__name__)

RANDOM_WEIGHTS_NOTICE = (
    "WARNING: CLIP model {model} has RANDOM weights (--pretrained none): the features only serve tests and the "
    "offline demo and carry no visual meaning. Use --pretrained openai (or a checkpoint path/URI) for real use."
)


HUB_PROBE_SECONDS = 1.5  # how long the hub's host gets to accept a TCP connection before vmr assumes no network
_warned_random: set[str] = set()  # models whose random-weights warning this process logged already


@functools.lru_cache(maxsize=1)
def hub_offline_reason() -> str:
    """Why the Hugging Face hub (where open_clip finds tagged weights) cannot be reached, "" when it can: offline mode
    set (``HF_HUB_OFFLINE``), or its host (``HF_ENDPOINT``, default huggingface.co) not accepting a TCP connection
    within :data:`HUB_PROBE_SECONDS` (name resolution included, so a machine without DNS answers as fast). Probed once
    per process."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    url = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    result: list[str] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=HUB_PROBE_SECONDS).close()
            result.append("")
        except OSError as e:
            result.append(f"{host}:{port} is unreachable ({e.strerror or type(e).__name__})")

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(HUB_PROBE_SECONDS + 0.5)
    return result[0] if result else f"{host}:{port} did not answer within {HUB_PROBE_SECONDS:g} s"


@contextlib.contextmanager
def _hub_offline(offline: bool):
    """huggingface_hub in offline mode for the duration when ``offline`` (cache only, no requests): its setting is
    read from the environment when it is imported, so the module attribute it consults is switched."""
    if not offline:
        yield
        return
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def _is_checkpoint(pretrained: str) -> bool:
    return "://" in pretrained or os.path.sep in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors"))


class ClipEncoder:
    """CLIP towers for frames and sentences. ``.dim`` is the joint embedding size; ``.pretrained`` the weights tag as
    given (recorded in manifests); ``.random_weights`` is True for ``pretrained="none"``. ``warn=False`` leaves the
    random-weights warning to the caller (:meth:`notice`; the pipelines print it once, not once per process)."""

    def __init__(self, model_name: str = "ViT-B-32", pretrained: str = "none", device: str | None = None, seed: int = 0,
                 warn: bool = True):
        import open_clip

        self.model_name = model_name
        self.pretrained = pretrained
        self.random_weights = pretrained.lower() == "none"
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if model_name not in open_clip.list_models() and not model_name.startswith(("hf-hub:", "local-dir:")):
            raise ConfigError(f"unknown CLIP model {model_name!r}; open_clip knows e.g. ViT-B-32, ViT-B-16, ViT-L-14")

        spill_dir = source = None
        offline = ""
        try:
            if self.random_weights:
                source = None
            elif _is_checkpoint(pretrained):
                if not storage.exists(pretrained):
                    raise InputError(f"CLIP checkpoint not found: {pretrained}")
                if storage.is_remote(pretrained):
                    spill_dir = tempfile.mkdtemp(prefix="vmr-clip-")
                    log.info("downloading CLIP checkpoint %s", pretrained)
                source = storage.local_copy(pretrained, spill_dir)
            else:
                source = pretrained  # an open_clip tag
                offline = hub_offline_reason()
            # open_clip warns on the root logger that no weights were loaded: with "none" that is what was asked
            # for, and RANDOM_WEIGHTS_NOTICE says it with its consequence
            with torch.random.fork_rng(devices=[]), without_log_message("", "No pretrained weights loaded"), \
                    without_log_message("", "Failed to download weights"), _hub_offline(bool(offline)):
                torch.manual_seed(seed)
                model, _, preprocess = open_clip.create_model_and_transforms(
                    model_name, pretrained=source, device="cpu", pretrained_image=False, pretrained_text=False
                )
        except Exception as e:  # noqa: BLE001 - open_clip raises RuntimeError, download errors vary
            if offline and not isinstance(e, InputError):
                raise ServiceUnavailable(
                    f"cannot download CLIP weights {pretrained!r} for {model_name}: no network ({offline}) and they "
                    "are not in the local cache; use --pretrained none (random weights: tests and the demo only) or "
                    "point --pretrained at local weights, a checkpoint path or URI (e.g. /models/ViT-B-32-openai.pt)"
                ) from None
            if source is not None and not isinstance(e, InputError):
                raise InputError(f"cannot load CLIP weights {pretrained!r} for {model_name}: {e}") from e
            raise
        finally:
            if spill_dir is not None:
                import shutil

                shutil.rmtree(spill_dir, ignore_errors=True)

        self.model = model.to(self.device).eval()
        self._transform = preprocess
        self._tokenizer = open_clip.get_tokenizer(model_name)
        with torch.inference_mode():
            self.dim = int(self.model.encode_text(self._tokenizer(["probe"]).to(self.device)).shape[-1])
        if self.random_weights and warn and model_name not in _warned_random:
            _warned_random.add(model_name)  # once per process, however many encoders it makes
            log.warning(self.notice())

    def notice(self) -> str:
        """The random-weights warning ("" when the weights are real)."""
        return RANDOM_WEIGHTS_NOTICE.format(model=self.model_name) if self.random_weights else ""

    @property
    def image_size(self) -> int:
        size = self.model.visual.image_size
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 RGB frames (n, H, W, 3) -> (n, 3, S, S) float tensor: open_clip's eval transform for this model,
        applied per frame exactly as open_clip applies it (on a PIL image)."""
        from PIL import Image

        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise InputError(f"frames must be uint8 (n, H, W, 3) RGB, got {frames.dtype} {frames.shape}")
        if len(frames) == 0:
            return torch.zeros((0, 3, self.image_size, self.image_size))
        return torch.stack([self._transform(Image.fromarray(f)) for f in frames])

    def encode_images(self, pixels: torch.Tensor) -> np.ndarray:
        """Preprocessed pixels (n, 3, S, S) -> L2-normalised image embeddings (n, dim) float32."""
        if len(pixels) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        with torch.inference_mode():
            emb = self.model.encode_image(pixels.to(self.device, non_blocking=True), normalize=True)
        return emb.float().cpu().numpy()

    def encode_frames(self, frames: np.ndarray) -> np.ndarray:
        """uint8 RGB frames (n, H, W, 3) -> L2-normalised embeddings (n, dim) float32."""
        return self.encode_images(self.preprocess(frames))

    def encode_text(self, sentences: list[str]) -> np.ndarray:
        """Sentences -> L2-normalised sentence embeddings (n, dim) float32 (open_clip's pooled text feature)."""
        if isinstance(sentences, str):
            raise InputError("encode_text takes a list of sentences, not a single string")
        if len(sentences) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        with torch.inference_mode():
            emb = self.model.encode_text(self._tokenizer(list(sentences)).to(self.device), normalize=True)
        return emb.float().cpu().numpy()

    def encode_text_tokens(self, sentence: str) -> np.ndarray:
        """One sentence -> per-token features (L, dim) float32 in the joint space, each row L2-normalised.

        The rows are the text transformer's final (layer-normed) states for the start token, the word pieces and the
        end token, each multiplied by the text projection, as open_clip does for the pooled token. L is the
        tokenised length including both special tokens (at most the context length, 77 for CLIP). Supported for
        open_clip's CLIP text transformer (not for Hugging Face text towers)."""
        import open_clip

        tokens = self._tokenizer([sentence]).to(self.device)
        m = self.model
        with torch.inference_mode():
            if isinstance(m, open_clip.CLIP):
                tower, pool = m, m.text_pool_type
                cast = m.transformer.get_cast_dtype()
                x = m.token_embedding(tokens).to(cast) + m.positional_embedding.to(cast)
                x = m.ln_final(m.transformer(x, attn_mask=m.attn_mask))
            elif isinstance(getattr(m, "text", None), open_clip.transformer.TextTransformer) and m.text.cls_emb is None:
                tower, pool = m.text, m.text.pool_type
                old = tower.output_tokens
                tower.output_tokens = True
                try:
                    _, x = tower(tokens)
                finally:
                    tower.output_tokens = old
            else:
                raise ConfigError(f"per-token text features are not supported for {self.model_name}")
            if pool == "argmax":
                length = int(tokens[0].argmax()) + 1
            else:
                length = int((tokens[0] != 0).sum())
            x = x[0, :length]
            proj = tower.text_projection
            if proj is not None:
                x = proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj
            x = torch.nn.functional.normalize(x.float(), dim=-1)
        return x.cpu().numpy()
