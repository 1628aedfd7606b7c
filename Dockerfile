# The ICR installations sync image: Airflow (same version as pyproject.toml / constraints.txt)
# plus this project, installed with the repo's pin set. Used by every Airflow service in
# docker-compose.yaml and by the optional ICR simulator (profile `simulator`).
#
# No secret goes into the image: the ICR private key is mounted at run time from ./secrets
# (see .dockerignore, which also keeps .env, *.pem, .venv and artifacts out of the context).
FROM apache/airflow:3.3.2-python3.11

# A project dir the airflow user owns (pip builds the wheel in it).
USER root
RUN mkdir -p /opt/airflow/project/tests \
    && touch /opt/airflow/project/tests/__init__.py \
    && chown -R airflow:0 /opt/airflow/project
USER airflow
WORKDIR /opt/airflow/project

# Dependencies first (pyproject + pins), so code edits reuse the cached layers as far as possible.
COPY --chown=airflow:0 pyproject.toml constraints.txt README.md ./
# The package ships the DAG modules too (icr.dags), so dags/ is part of the build.
COPY --chown=airflow:0 plugins/ plugins/
COPY --chown=airflow:0 sql/ sql/
COPY --chown=airflow:0 dags/ dags/
RUN pip install --no-cache-dir -c constraints.txt ".[celery]"

# The ICR simulator (python -m tests.simulator) for the `simulator` profile.
COPY --chown=airflow:0 tests/simulator/ tests/simulator/

ENV PYTHONPATH=/opt/airflow/project \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/airflow/project/dags

WORKDIR /opt/airflow
