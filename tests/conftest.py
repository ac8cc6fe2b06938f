import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DPT_SCALE", "smoke")
# the suite trains on the CPU on every machine; tests/test_device.py runs on $DPT_TEST_DEVICE
os.environ.setdefault("DPT_DEVICE", "cpu")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests share small fixtures (test_probe.tiny_backbone)
