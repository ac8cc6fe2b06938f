import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DPT_SCALE", "smoke")
