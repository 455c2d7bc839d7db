# Every target installs what it needs into ./.venv first; nothing is done by hand.
# requirements*.txt pin the direct dependencies; constraints.txt (pip freeze of a tested
# install) pins everything else, so a fresh machine gets exactly the tested set.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: help install demo airflow test test-fast test-slow test-docker test-docker-gpu lint bench-ingest bench-models \
	bench-score soak clean distclean

help:
	@echo "make demo        generate the demo corpus and run the three DAGs through Airflow (all under ./demo)"
	@echo "make airflow     the Airflow UI on http://127.0.0.1:8080 with the project's DAGs (Ctrl-C stops it)"
	@echo "make test        lint, type check and every test tier (starts its own servers); what CI runs"
	@echo "make test-fast   the unit, data and model tiers: no server, no subprocess, no DAG run (the inner loop)"
	@echo "make test-slow   the slow tests (large files, ../shared/datasets when present)"
	@echo "make test-docker the Docker deployment built and started for real (root; its own dockerd)"
	@echo "make test-docker-gpu  the same with the CUDA image on the gpu worker (in make test-slow)"
	@echo "make lint        ruff and mypy"
	@echo "make bench-ingest  ingest throughput of a generated 2 GB CSV vs plain pyarrow"
	@echo "make bench-models  default model vs the linear reference per stress variant of ../shared/datasets"
	@echo "make bench-score   scoring speed and peak RSS: default vs the scikit-learn stream (short, long texts),"
	@echo "                   then pipeline vs bare predict vs seed-style path"
	@echo "make soak        10 dates of 1M documents ingested and scored through the CLI; memory per date"
	@echo "make clean       remove the demo lake and build outputs"

$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt -r requirements-dev.txt -c constraints.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/airflow_local.py demo --home demo

airflow: $(STAMP)
	$(BIN)/python scripts/airflow_local.py serve --home demo

test: lint
	$(BIN)/pytest
	$(MAKE) test-docker

# Builds the images (local stand-ins where nothing can be pulled), runs docker compose with
# docker/compose.test.yml and the three DAGs; TEXTCLF_DOCKER_KEEP=1 keeps the images for the next run.
test-docker: $(STAMP)
	TEXTCLF_DOCKER_TESTS=1 $(BIN)/pytest -p no:cacheprovider -s tests/test_docker_stack.py

# The same with the CUDA image (tensorflow[and-cuda], ~3 GB more wheels) on the gpu worker.
test-docker-gpu: $(STAMP)
	TEXTCLF_DOCKER_TESTS=1 TEXTCLF_DOCKER_GPU=1 $(BIN)/pytest -p no:cacheprovider -s tests/test_docker_stack.py

# The dags tier (dag.test() runs of whole DAGs, about a minute more) runs in make test, or: pytest -m dags
test-fast: $(STAMP)
	$(BIN)/pytest -n 2 --dist worksteal -m "not integration and not slow and not dags"

test-slow: $(STAMP)
	$(BIN)/pytest -m slow
	$(MAKE) test-docker-gpu

lint: $(STAMP)
	$(BIN)/ruff check textclf tests dags plugins scripts
	$(BIN)/mypy

bench-ingest: $(STAMP)
	$(BIN)/python scripts/bench_ingest.py

bench-models: $(STAMP)
	$(BIN)/python scripts/bench_models.py --json build/bench_models.json

bench-score: $(STAMP)
	$(BIN)/python scripts/bench_score.py --vs-sklearn short long --json build/bench_score_vs_sklearn.json
	$(BIN)/python scripts/bench_score.py --docs 1000000 5000000

soak: $(STAMP)
	$(BIN)/python scripts/soak.py --dates 10 --docs 1000000

clean:
	rm -rf demo build *.egg-info .pytest_cache .ruff_cache

distclean: clean
	rm -rf $(VENV) bench-data
