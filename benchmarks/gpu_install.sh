# Sourced by the GPU scripts, from the repository root: a CUDA build of torch and fedmeta in
# .gpuvenv (the other pins as the dev environment's), Flower's network calls off, `step` to
# mark a phase, `$out` (absolute: $OUT on the device machine) and `$py`.
out="$(realpath -m "${OUT:-benchmarks/results/gpu}")"
mkdir -p "$out"
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
step() { echo; echo "== $1 ($(date +%T))"; }

step "install: a CUDA build of torch, the other pins as the dev environment's"
python3 -m venv .gpuvenv
grep -v '^torch==' constraints.txt > "$out/constraints-gpu.txt"
.gpuvenv/bin/pip install --quiet --upgrade pip
timeout 300 .gpuvenv/bin/pip install --quiet -c "$out/constraints-gpu.txt" 'torch>=2.4' \
    -e '.[test]' || { echo "install failed"; exit 1; }
py="$PWD/.gpuvenv/bin/python"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$py -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
      "available", torch.cuda.is_available(), torch.cuda.get_device_name(0))' \
    | tee "$out/torch.txt"
