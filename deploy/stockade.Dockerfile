# The Stockade orchestrator for deploy/compose.yaml: the package from this
# checkout. Sandboxes run on the host's engine (its socket is mounted), from
# images `stockade images build` made on the host.
FROM python:3.12-slim
WORKDIR /src
COPY pyproject.toml README.md ./
COPY orchestrator ./orchestrator
COPY stockade_sdk ./stockade_sdk
COPY toolkits ./toolkits
COPY policies ./policies
COPY sandbox_images ./sandbox_images
RUN pip install --no-cache-dir . && rm -rf /src
ENV STOCKADE_CONFIG=/etc/stockade/stockade.yaml
EXPOSE 8787 9464
CMD ["stockade", "serve"]
