#!/usr/bin/env bash
# On a GPU machine without Rust: run what scripts/gpu-prebuild.sh built (.gpu/bin.tar.xz)
# from the repository root. Prints both networks' f16-vs-f32 differences and latencies on
# CUDA (examples/precision), then analyses three phantom studies on the CPU and on CUDA
# (f16) with the shipped models and compares heads, stages and probabilities.
# Results go to $OUT (or .gpu/out).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-.gpu/out}
mkdir -p "$out" /tmp/onfh-gpu
tar -xJf .gpu/bin.tar.xz -C /tmp/onfh-gpu || exit 1
bin=/tmp/onfh-gpu
libs=$bin
for lib in libcublas.so.13 libcublasLt.so.13 libnvrtc.so.13 libcurand.so.10; do
    found=$(find /usr/local /opt /usr/lib -name "$lib" 2>/dev/null | head -1)
    echo "$lib: ${found:-not found}"
    [ -n "$found" ] && libs="$libs:$(dirname "$found")"
done
export LD_LIBRARY_PATH=$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
nvidia-smi -L
ldd "$bin/onfh-edge" | grep 'not found'
echo "--- precision (CUDA)"
timeout 300 "$bin/precision" --device cuda --runs 20 2>&1 | tee "$out/precision_cuda.txt"
echo "--- analyze: CPU f32 vs CUDA f16"
rm -rf /tmp/onfh-gpu/ph
"$bin/onfh-edge" phantom --out /tmp/onfh-gpu/ph --studies 3 --seed 11 > /dev/null
for study in /tmp/onfh-gpu/ph/*/; do
    name=$(basename "$study")
    for dev in cpu cuda; do
        timeout 120 "$bin/onfh-edge" analyze "$study" --json --device "$dev" \
            > "$out/$name.$dev.json" 2>> "$out/analyze.log"
        echo "$name $dev: exit $?"
    done
done
python3 - "$out" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
worst = 0.0
for cpu in sorted(out.glob("*.cpu.json")):
    cuda = cpu.with_name(cpu.name.replace(".cpu.", ".cuda."))
    a, b = json.loads(cpu.read_text()), json.loads(cuda.read_text())
    for ha, hb in zip(a["heads"], b["heads"]):
        d = max(abs(ha["probabilities"][k] - hb["probabilities"][k]) for k in ("0", "I", "II"))
        worst = max(worst, d)
        print(f'{cpu.name.split(".")[0]} {ha["side"]}: cpu {ha["stage"]} cuda {hb["stage"]} '
              f'max |dp| {d:.4f}; total ms cpu {a["timings_ms"]["total"]} cuda {b["timings_ms"]["total"]}')
print(f"largest probability difference CPU f32 vs CUDA f16: {worst:.4f}")
PY
