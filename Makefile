# dpt: the two commands a newcomer needs are `make reproduce` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: lint setup setup-paper paper-dry-run paper-dry-run-cpu reproduce ablations seeds check-claims dose-response profile verify retrain smoke exercises test test-unit test-notebooks bench bench-float gpu-check toy-model lab sync book setup-browser clean

## setup: create .venv, install dptlib with its dev tools, register the "dpt" Jupyter kernel
setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name dpt --display-name "Python (dpt)"
	@touch $(STAMP)

## reproduce: the core notebooks (00-03) with papermill at the toy scale: regenerate their figures/ and outputs
##            SET="scheduler=dpm++ num_inference_steps=6": sample with DPM-Solver++ at 6 steps (faster; other numbers
##            than the committed ones, which DDIM at 15 / 50 steps made: docs/evidence.md)
SET ?=
reproduce: setup
	$(BIN)/dpt reproduce --scale toy --only core $(if $(strip $(SET)),--set $(SET))

## ablations: the ablation notebooks (04-08, one papermill run per variant; finished variants are kept) and 09_results
ablations: setup
	$(BIN)/dpt reproduce --scale toy --only ablations

## seeds: every trained arm of the core claims for training seeds 0-4 (papermill_params/ablations/seeds.yaml; hours on 2 cores,
##        resumable: finished runs are skipped, and exported to results/toy/seeds/ to be committed); then 09_results.
##        SEEDS_BATCH=seeds_q40: the same arms with the 40-query, constant-rate stage 1 they replaced (docs/evidence.md)
SEEDS_BATCH ?= seeds
seeds: setup
	$(BIN)/dpt reproduce --scale toy --ablation $(SEEDS_BATCH)
	$(BIN)/dpt reproduce --scale toy --only 09_results

## convergence: stage 1 under shorter learning-rate schedules, validation ITM / REC at every fifth of the steps
##              (dptlib.experiments.convergence; ARMS=, SEEDS= choose; each run ~10-25 min on 2 cores, resumable by arm); then its table
##              and figure (figures/stage1_convergence.*)
ARMS ?= cosine-1500 cosine-1000 cosine-1500-lr2e-3
SEEDS ?= 0
convergence: setup
	$(BIN)/dpt convergence --scale toy --arms $(ARMS) --seeds $(SEEDS)

## dose-response: stage 2 from 0 to 3,000 steps at two learning rates, three training seeds (dptlib.experiments.dose_response;
##                validation curves at every dose, the checkpoint chosen by CLIP and by the oracle, its test cells; about
##                40 min a run + 17 min a seed's stage 1 on 2 cores, resumable by run); then figures/fig4a_dose_response.png
##                and figures/stage2_dose_{curves,test}.*
DOSE_LRS ?= 1e-4 1e-3
DOSE_SEEDS ?= 0 1 2
dose-response: setup
	$(BIN)/dpt dose-response --scale toy --lrs $(DOSE_LRS) --seeds $(DOSE_SEEDS)

## check-claims: re-derive the seed-aware claims tables from the runs present (runs/ or results/) and compare them with
##               figures/seed_claims.csv, seed_claims_confirm.csv (seeds 5-9) and the ablations' *_seed_claims.csv (dptlib.experiments.ablation_claims): same verdicts,
##               every estimate inside its committed interval
check-claims: setup
	$(BIN)/dpt claims check --scale toy

## verify: strict nbval on the committed notebooks at the toy scale (every stored output must come out again; hours);
##         VERIFY=notebooks/0[0-3]*.ipynb checks a part (the core notebooks: 1 h 29 min on 2 cores, measured 2026-12-01)
##         outputs that come from training come out byte for byte on the CPU kind that made them (another CPU's float
##         rounding moves them: README)
##         a cell may run for hours (on a fresh clone an ablation notebook's first cell runs its whole batch): nbval's 2,000 s is raised to 6 h
VERIFY ?= notebooks/0*.ipynb
verify: setup
	DPT_SCALE=toy TQDM_DISABLE=1 $(BIN)/python -m pytest --nbval --nbval-current-env --nbval-sanitize-with notebooks/nbval_sanitize.cfg --nbval-cell-timeout 21600 -p no:cacheprovider $(VERIFY)

## smoke: the same runs at the smoke scale (minutes; figures go to runs/smoke/figures)
smoke: setup
	$(BIN)/dpt reproduce --scale smoke

## test: lint, unit tests, then every notebook under nbval at the smoke scale
test: lint test-unit test-notebooks

## lint: ruff (configuration in pyproject.toml) on the package, the tests and the notebooks' .py (exercises included)
lint: setup
	$(BIN)/ruff check dptlib tests notebooks/*.py notebooks/paper/*.py notebooks/exercises/*.py

test-unit: setup
	DPT_SCALE=smoke $(BIN)/python -m pytest tests

test-notebooks: setup
	rm -rf runs/smoke/ablations runs/smoke/results  # the smoke batches run afresh: a finished variant would be skipped
	DPT_SCALE=smoke $(BIN)/python -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider --ignore=notebooks/paper notebooks

## bench: performance benchmarks (ratios measured in one run; not part of the tests)
bench: setup
	$(BIN)/dpt timing probe

## profile: where the toy runs' seconds go: unit costs measured here, one seeds-batch arm estimated and as measured,
##          the core notebooks' sections (from runs/toy/notebooks, if make reproduce ran)
profile: setup
	$(BIN)/dpt timing profile

## bench-float: what pinning the CPU's float path costs, with a checksum per path to compare between CPUs (about 1 min)
bench-float: setup
	$(BIN)/dpt timing float-paths

## gpu-check: on a CUDA machine, the device tests + SD-2.1-sized throughput, memory and MFU as JSON (< 8 min); exits 0 without CUDA
gpu-check: setup
	$(BIN)/dpt gpu-check --out runs/gpu-check/gpu_check.json

## setup-paper: the paper-scale graders' extras (spaCy, torch-fidelity) and spaCy's en_core_web_sm, the model T2I-CompBench reads
##              prompts with (downloaded by spaCy; where it cannot be, the T2I-CompBench columns say they used the fallback reader)
setup-paper: $(VENV)/.installed-paper

$(VENV)/.installed-paper: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,paper]'
	$(BIN)/python -m spacy download en_core_web_sm || echo "spaCy's en_core_web_sm could not be downloaded here: dry runs read prompts with the fallback"
	@touch $@

## paper-dry-run: on a CUDA machine, the paper-scale path at the real sizes with random weights (< 8 min on one H100 / H200):
##                01 (a few steps) -> paper/02 -> paper/03 on 10 prompts per benchmark, then each grader's images/s and peak memory
##                (JSON in runs/paper-dry-run/); exits 0 without CUDA
paper-dry-run: setup-paper
	$(BIN)/dpt paper-dry-run --device cuda --out runs/paper-dry-run/paper_dry_run.json

## paper-dry-run-cpu: the reduced version on a CPU: the SD-2.1-sized U-Net for one step and each grader's real architecture on
##                    2 images of 512 px, with times and peak memory (about 100 s on 2 cores, 5.6 GiB; not part of make test)
paper-dry-run-cpu: setup-paper
	$(BIN)/dpt paper-dry-run --device cpu --reduced --out runs/paper-dry-run/paper_dry_run_cpu.json

## retrain: train the toy model again from scratch through 00b_base_model and compare it with the shipped one (about 70 min)
retrain: setup
	$(BIN)/dpt reproduce --scale toy --only 00b_base_model --set retrain=true --no-write-back

## toy-model: train the toy Stable Diffusion + evaluator CLIP from scratch into runs/toy/ (about an hour)
toy-model: setup
	$(BIN)/dpt toy-model --scale toy --out runs/toy/toy-sd --evaluator-out runs/toy/toy-evaluator

## lab: JupyterLab on the notebooks with the dpt kernel
lab: setup
	$(BIN)/jupyter lab notebooks

## exercises: notebooks/exercises/ from the solution notebooks (cells tagged solution dropped, code after '# solution' cut)
exercises: setup
	$(BIN)/dpt exercises

## book: the course as a static website in build/book/ (open build/book/index.html): Sphinx + myst-nb on the committed,
##       executed notebooks 00-09 (never run here; solutions folded), docs/*.md and the claims table (docs/book/; ~15 s)
book: setup
	$(BIN)/python docs/book/build.py --out build/book

## setup-browser: Debian's chromium and chromium-driver (apt-get, as root or with sudo -n) for tests/test_book.py, which opens
##                every page of the site in headless Chromium (and skips without it); says so and goes on where apt cannot
setup-browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then echo "setup-browser: chromium and chromedriver present"; \
	else \
	  if [ "$$(id -u)" = 0 ]; then sudo=""; else sudo="sudo -n"; fi; \
	  install="$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver"; \
	  { $$install || { $$sudo apt-get update -qq && $$install; }; } >/dev/null 2>&1 \
	    && echo "setup-browser: installed $$(/usr/bin/chromium --version 2>/dev/null)" \
	    || echo "setup-browser: could not install chromium with apt-get here; tests/test_book.py's browser checks will skip"; \
	fi

## sync: re-pair notebooks/*.py and notebooks/*.ipynb after editing either
sync: setup
	$(BIN)/jupytext --sync notebooks/*.py notebooks/paper/*.py

clean:
	rm -rf runs/smoke
