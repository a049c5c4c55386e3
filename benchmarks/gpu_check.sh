#!/usr/bin/env bash
# The device checks of a session that is lent a GPU, in one command (see docs/benchmarks.md, "GPU"):
#   bash benchmarks/gpu_check.sh            # writes its logs and JSON under $OUT (default ./gpu_out)
# 1. what the machine has; 2. the CuPy and CUDA tests (they skip on machines without a GPU, so CI never runs
# them); 3. benchmarks/bench_gpu.py at the large and wide sizes. dlrcore runs from this checkout (PYTHONPATH),
# nothing is installed.
set -o pipefail
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
status=0
# array-api-compat is not in the GPU image: carry it as a wheel (see docs/benchmarks.md, "GPU") in ./.whl
if ! $PY -c "import array_api_compat" 2>/dev/null && ls .whl/array_api_compat-*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/array_api_compat-*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  $PY -c "import cupy, numpy, scipy, dlrcore, importlib.util as u; print('cupy', cupy.__version__, 'numpy', \
numpy.__version__, 'scipy', scipy.__version__, 'dlrcore', dlrcore.__version__, 'GPUs', \
cupy.cuda.runtime.getDeviceCount(), 'array_api_compat', u.find_spec('array_api_compat') is not None)"
} 2>&1 | tee "$OUT/env.txt" || status=1
$PY -m pytest -q -p no:cacheprovider -rs tests/test_sketch.py tests/test_device_stats.py -k "cupy or CuPy or cuda" \
    2>&1 | tee "$OUT/pytest_gpu.txt" || status=1
$PY benchmarks/bench_gpu.py --sizes "${SIZES:-large,wide16k}" --repeats "${REPEATS:-3}" --json "$OUT/bench_gpu.json" \
    2>&1 | tee "$OUT/bench_gpu.txt" || status=1
exit $status
