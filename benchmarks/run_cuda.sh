#!/usr/bin/env bash
# The GPU checks in one go: the CUDA tests (tests/test_cuda.py, and the interface and RoIAlign
# tests, whose CUDA cases run there), then the benchmark sections that say something about a
# GPU (diffusion cost, hardware efficiency in fp32/bf16, per-model cost, the sketch head),
# eager against torch.compile (bench_compile.py), and peak GPU memory of the ResNet-50 3D
# models. About 20 minutes in all; the device time of one session may allow part of it:
# the steps are ordered by what matters most.
#
# Usage (repository root, lgdnet importable, a CUDA device present):
#     bash benchmarks/run_cuda.sh OUT_DIR
# Writes OUT_DIR/test_cuda.log, OUT_DIR/RESULTS.*.md / results.*.json and OUT_DIR/memory.jsonl.
# Each step has a time limit, so that one slow step cannot starve the others.
set -u
out=${1:?usage: bash benchmarks/run_cuda.sh OUT_DIR}
python=${PYTHON:-python3}
mkdir -p "$out"
nvidia-smi -L
"$python" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, torch.cuda.get_device_name())'
timeout 300 "$python" -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_models_interface.py \
    tests/test_roi_align.py tests/test_epilogue_kernel.py tests/test_compile.py 2>&1 | tee "$out/test_cuda.log"
timeout 150 "$python" benchmarks/run_all.py --device cuda --only efficiency --out-dir "$out"
timeout 150 "$python" benchmarks/run_all.py --device cuda --only diffusion --out-dir "$out"
timeout 150 "$python" benchmarks/run_all.py --device cuda --only models sketch --no-memory --out-dir "$out"
# eager, compiled and compiled with CUDA graphs, bf16 channels-last at batch 16 and 32
timeout 420 "$python" benchmarks/bench_compile.py --device cuda --rounds 5 --out-dir "$out"
# training samples per loader core from videos and frame folders (the host's CPU)
timeout 120 "$python" benchmarks/bench_input_rate.py --out-dir "$out"
for model in lgd3d_r50 p3d_r50; do
    for probe in '"mode": "train", "batch": 4' '"mode": "train", "batch": 16' '"mode": "inference", "batch": 8'; do
        timeout 60 "$python" benchmarks/memory_probe.py "{\"model\": \"$model\", \"device\": \"cuda\", $probe}" \
            | sed "s/^{/{\"model\": \"$model\", $probe, /" | tee -a "$out/memory.jsonl"
    done
done
