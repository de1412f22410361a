# faceid — the two commands: `make run` and `make test`. Both set everything up first.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test models lint clean

# The commonest cause of a failed install here is a full disk (torch alone is ~5.5 GB).
INSTALL_FAILED = { echo "faceid: installing into $(VENV) failed. It needs about 6.5 GB free;" \
	"free space where $(VENV) lives:"; df -h $(VENV) | tail -1; \
	echo "free some space (or fix the error above) and run make again"; exit 1; }

# Install once per change of pyproject.toml. torch/torchvision are pinned where the
# machines keep them on local disk; anywhere else pip downloads the same releases.
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "faceid needs $(PYTHON) (Python 3.11) on PATH"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1" || $(INSTALL_FAILED)
	$(BIN)/python -m pip install --quiet -e ".[dev,plot,eval,cluster]" || $(INSTALL_FAILED)
	touch $(STAMP)

models: $(STAMP)
	$(BIN)/faceid models

run: models
	mkdir -p inbox id_bank
	$(BIN)/faceid --bank id_bank --models face_models

test: models
	$(BIN)/ruff check faceid_tui tests benchmarks
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check faceid_tui tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
