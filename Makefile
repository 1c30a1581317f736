# The two commands README names for a fresh machine.
#   make demo   set up the environment, then run the main job on the generated dataset
#   make test   set up the environment, then run the whole test suite
PY := .venv/bin/python

.PHONY: setup demo test

setup:
	bash tools/setup_env.sh

demo: setup
	bash tools/run_demo.sh

test: setup
	$(PY) -m pytest tests
