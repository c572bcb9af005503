# Docker and Kubernetes targets (included by the Makefile). Engine-facing targets run as root:
# they install Debian's docker.io / docker-compose when missing and start dockerd (vfs) when none runs,
# so the README's Deploy lines work on a fresh clone with nothing prepared (make docker-e2e proves it).
DOCKER        ?= /usr/bin/docker
IMAGE         ?= dropserve:latest
OFFLINE       ?= 1
DOCKER_BUILD_ENV := DOCKER_BUILDKIT=1 DOCKER=$(DOCKER)
PIP_CA_SECRET := --secret id=pip_ca,src=/etc/ssl/certs/ca-certificates.crt
WHEELHOUSE_STAMP := deploy/wheelhouse/.complete
# `docker compose`, else `docker-compose`, else Debian's docker-compose installed on first use.
COMPOSE       ?= DOCKER=$(DOCKER) deploy/compose.sh
# The image's user (Dockerfile: useradd --uid); folders the containers write are given to it.
IMAGE_UID     := 10001

.PHONY: docker-engine docker-base wheelhouse docker-build docker-datasets docker-up docker-scale docker-down docker-e2e test-deploy

docker-engine:
	DOCKER=$(DOCKER) deploy/docker-engine.sh

# Prints the base image: python:3.11-slim when pullable, else a debootstrap-built local one (the
# build stage's, with a C compiler: deploy/base-image.sh build).
docker-base: docker-engine
	@DOCKER=$(DOCKER) deploy/base-image.sh

wheelhouse: $(WHEELHOUSE_STAMP)

# Re-downloaded only when the dependencies change.
$(WHEELHOUSE_STAMP): pyproject.toml constraints.txt
	deploy/wheelhouse.sh
	touch $@

# OFFLINE=1 (default here) installs from deploy/wheelhouse/; OFFLINE=0 uses the network, with the
# host CA bundle handed to pip as a build secret (for TLS-intercepting proxies).
docker-build: docker-engine $(if $(filter 1,$(OFFLINE)),$(WHEELHOUSE_STAMP))
	$(DOCKER_BUILD_ENV) $(DOCKER) build \
		--build-arg BASE_IMAGE=$$(DOCKER=$(DOCKER) deploy/base-image.sh) \
		--build-arg BUILD_IMAGE=$$(DOCKER=$(DOCKER) deploy/base-image.sh build) --build-arg OFFLINE=$(OFFLINE) \
		$(if $(filter 0,$(OFFLINE)),$(PIP_CA_SECRET)) \
		-t $(IMAGE) .
	@# The build this one replaced, now untagged: on vfs storage each image is a full copy (~1 GB).
	@$(DOCKER) image prune -f --filter label=org.opencontainers.image.title=dropserve >/dev/null
	@echo "$(IMAGE): $$($(DOCKER) image inspect -f '{{.Size}}' $(IMAGE) | awk '{printf "%d MB", $$1/1e6}'), user $$($(DOCKER) image inspect -f '{{.Config.User}}' $(IMAGE))"

# The train job's dataset cache (/data): a copy of the host's, which `make datasets` fills with the
# project's own loader (the container has no CA for a TLS-intercepting proxy), owned by the image's
# user so the job may write it too. The host's own cache keeps its owner.
DOCKER_DATASETS := .cache/docker-datasets
docker-datasets: datasets
	mkdir -p $(DOCKER_DATASETS)
	cp -u $(DATASETS_CACHE)/*.npz $(DOCKER_DATASETS)/
	chown -R $(IMAGE_UID):$(IMAGE_UID) $(DOCKER_DATASETS) 2>/dev/null || chmod -R a+rwX $(DOCKER_DATASETS)

# The stack on http://127.0.0.1:8080 (DROPSERVE_HTTP_PORT): returns once nginx answers /readyz.
REPLICAS ?= 2
DROPSERVE_HTTP_PORT ?= 8080
COMPOSE_ENV = DROPSERVE_IMAGE=$(IMAGE) DROPSERVE_DATASETS=$(CURDIR)/$(DOCKER_DATASETS) \
	DROPSERVE_HTTP_PORT=$(DROPSERVE_HTTP_PORT) NGINX_IMAGE=$$(DOCKER=$(DOCKER) deploy/nginx-image.sh)

docker-up: docker-build docker-datasets
	$(COMPOSE_ENV) $(COMPOSE) up -d --no-build --scale api=$(REPLICAS)
	@for _ in $$(seq 1 60); do \
		curl -fsS -o /dev/null http://127.0.0.1:$(DROPSERVE_HTTP_PORT)/readyz 2>/dev/null \
			&& { echo "dropserve: ready on http://127.0.0.1:$(DROPSERVE_HTTP_PORT)"; exit 0; }; \
		sleep 1; \
	done; \
	echo "no answer from http://127.0.0.1:$(DROPSERVE_HTTP_PORT)/readyz after 60 s"; \
	$(COMPOSE_ENV) $(COMPOSE) ps; $(COMPOSE_ENV) $(COMPOSE) logs --tail=20; exit 1

# make docker-scale REPLICAS=4: more api replicas, then nginx restarts to resolve them all.
docker-scale:
	$(COMPOSE_ENV) $(COMPOSE) up -d --no-build --scale api=$(REPLICAS)
	$(COMPOSE_ENV) $(COMPOSE) restart nginx

docker-down:
	$(COMPOSE_ENV) $(COMPOSE) down --volumes --remove-orphans

# The CI proof: the README's Deploy lines verbatim in a fresh copy of this tree (what a clone
# holds, nothing git ignores): build, up, the curl lines through nginx, down; answers checked.
docker-e2e:
	DOCKER=$(DOCKER) deploy/ci-docker-e2e.sh

test-deploy: setup
	$(BIN)/python -m pytest -q tests/deploy
