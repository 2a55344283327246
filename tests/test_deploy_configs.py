"""The deployment files of deploy/ and the Dockerfile: the run-launcher blocks are valid for
dagster-k8s' and dagster-docker's own config schemas (and build the intended Kubernetes Job and
Docker container), each makes a valid instance with deploy/dagster.yaml, the Helm values say what
those files say, and the image runs the code server as a non-root user without secrets."""

import re
import shutil
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.instance.config import dagster_instance_config  # the instance schema: no public API
from dagster_docker import DockerRunLauncher
from dagster_k8s import DagsterK8sJobConfig, K8sRunLauncher, construct_dagster_k8s_job
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import UserDefinedDagsterK8sConfig
from docker.models.containers import _create_container_args

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
LAUNCHERS = {"run_launcher_k8s.yaml": ("dagster_k8s", "K8sRunLauncher", K8sRunLauncher),
             "run_launcher_docker.yaml": ("dagster_docker", "DockerRunLauncher", DockerRunLauncher)}
#: The variables the launcher blocks read with ``env:`` (the Helm chart sets them on its pods).
CHART_ENV = {"DAGSTER_HOME": "/opt/dagster/dagster_home", "DAGSTER_K8S_INSTANCE_CONFIG_MAP": "dagster-instance",
             "DAGSTER_K8S_PG_PASSWORD_SECRET": "dagster-postgresql-secret",
             "DAGSTER_POSTGRES_URL": "postgresql://dagster@postgres.internal:5432/dagster"}


@pytest.fixture(autouse=True)
def chart_env(monkeypatch):
    for name, value in CHART_ENV.items():
        monkeypatch.setenv(name, value)


def launcher_block(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text())["run_launcher"]


def processed(launcher: type, config: dict) -> dict:
    """``config`` validated and processed against ``launcher.config_type()`` (defaults filled in,
    ``env:`` values resolved) by Dagster's public config validation: the schema as the config of
    a throwaway op, checked with ``dg.validate_run_config``. Raises DagsterInvalidConfigError."""

    @dg.op(name="launcher", config_schema=launcher.config_type())
    def launcher_op():
        return None

    @dg.job(name="validate_launcher")
    def validate_launcher():
        launcher_op()

    return dg.validate_run_config(validate_launcher, {"ops": {"launcher": {"config": config}}})["ops"]["launcher"][
        "config"]


@pytest.mark.parametrize("name", sorted(LAUNCHERS))
def test_launcher_blocks_name_their_class_and_pass_its_schema(name):
    module, cls_name, cls = LAUNCHERS[name]
    block = launcher_block(name)
    assert (block["module"], block["class"]) == (module, cls_name)
    assert getattr(__import__(module), cls_name) is cls
    config = processed(cls, block["config"])
    assert "ATTRIBUTION_FRAMES_DIR=/shared/attribution/frames" in config["env_vars"]
    assert not [v for v in config["env_vars"] if re.search(r"(DB_URL|POSTGRES_URL|WEBHOOK_URL)=", v)]  # no secret


@pytest.mark.parametrize("name, typo", [("run_launcher_k8s.yaml", "job_namespce"),
                                        ("run_launcher_docker.yaml", "netwrok")])
def test_a_misspelt_key_is_refused_by_the_schema(name, typo):
    _, _, cls = LAUNCHERS[name]
    with pytest.raises(dg.DagsterInvalidConfigError, match=typo):
        processed(cls, {**launcher_block(name)["config"], typo: "x"})


def test_the_k8s_launcher_config_builds_the_intended_job():
    """The launcher's settings as dagster-k8s turns them into a Kubernetes Job (its own models
    refuse unknown Kubernetes fields): the shared volume, the memory, the non-root user."""
    config = processed(K8sRunLauncher, launcher_block("run_launcher_k8s.yaml")["config"])
    fields = ("image_pull_policy", "service_account_name", "env_config_maps", "env_secrets", "env_vars",
              "volume_mounts", "volumes", "labels", "resources", "security_context", "run_k8s_config")
    context = K8sContainerContext(**{k: config[k] for k in fields if k != "run_k8s_config"},
                                  run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(config["run_k8s_config"]),
                                  namespace=config["job_namespace"])
    job_config = DagsterK8sJobConfig(job_image="registry.example.com/attribution-pipeline:0.1.0",
                                     dagster_home=config["dagster_home"],
                                     instance_config_map=config["instance_config_map"],
                                     postgres_password_secret=config["postgres_password_secret"])
    job = construct_dagster_k8s_job(job_config, ["dagster", "api", "execute_run", "{}"], "dagster-run-test",
                                    user_defined_k8s_config=context.run_k8s_config)
    pod = job.spec.template.spec
    container = pod.containers[0]
    assert job.spec.backoff_limit == 0
    assert [v.persistent_volume_claim.claim_name for v in pod.volumes if v.persistent_volume_claim] == \
        ["attribution-shared"]
    assert [(m.name, m.mount_path) for m in container.volume_mounts] == [("attribution-shared", "/shared")]
    assert container.resources.limits["memory"] == "3Gi" and container.resources.requests["memory"] == "2Gi"
    assert (container.security_context.run_as_user, container.security_context.run_as_non_root) == (10001, True)
    assert {e.secret_ref.name for e in container.env_from if e.secret_ref} == {"attribution-secrets"}
    assert pod.service_account_name == "dagster"


def test_the_docker_launcher_container_kwargs_are_docker_run_arguments():
    config = processed(DockerRunLauncher, launcher_block("run_launcher_docker.yaml")["config"])
    args = _create_container_args({"image": "attribution-pipeline:0.1.0", "version": "1.44",
                                   "environment": config["env_vars"], "network": config["network"],
                                   "detach": True, **config["container_kwargs"]})
    assert args["user"] == "10001:10001" and args["host_config"]["Memory"] == 3 * 1024 ** 3
    assert "attribution-shared:/shared" in args["host_config"]["Binds"]
    with pytest.raises(TypeError, match="mem_limt"):
        _create_container_args({"image": "x", "version": "1.44", "mem_limt": "3g"})


@pytest.mark.parametrize("name", sorted(LAUNCHERS))
def test_deploy_dagster_yaml_with_each_launcher_is_a_valid_instance(name, tmp_path):
    instance = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    assert "run_launcher" not in instance  # the default launcher: the local layout of deploy/README.md
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump({**instance, **yaml.safe_load((DEPLOY / name).read_text())}))
    config, _ = dagster_instance_config(str(tmp_path))
    assert config["run_launcher"]["class"] == LAUNCHERS[name][1]
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    shutil.copy(DEPLOY / "dagster.yaml", tmp_path / "dagster.yaml")
    assert dagster_instance_config(str(tmp_path))[0]["storage"]["postgres"]["postgres_url"] == \
        {"env": "DAGSTER_POSTGRES_URL"}


def camel(value):
    """``value`` with snake_case keys as the Helm chart's camelCase (``max_concurrent_runs`` ->
    ``maxConcurrentRuns``); the values of tag limits (``key``, ``value``) are kept."""
    if isinstance(value, list):
        return [camel(v) for v in value]
    if not isinstance(value, dict):
        return value
    return {re.sub(r"_(\w)", lambda m: m.group(1).upper(), k): camel(v) for k, v in value.items()}


def test_helm_values_say_what_the_instance_and_launcher_files_say():
    values = yaml.safe_load((DEPLOY / "helm-values.yaml").read_text())
    instance = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    launcher = launcher_block("run_launcher_k8s.yaml")["config"]
    helm_launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert [s["name"] for s in helm_launcher["envSecrets"]] == launcher["env_secrets"]
    assert [c["name"] for c in helm_launcher["envConfigMaps"]] == launcher["env_config_maps"]
    assert (helm_launcher["volumes"], helm_launcher["volumeMounts"], helm_launcher["resources"]) == \
        (launcher["volumes"], launcher["volume_mounts"], launcher["resources"])
    # the run pods' whole environment and pod settings come from the launcher, as in the instance file
    assert helm_launcher["envVars"] == launcher["env_vars"]
    assert (helm_launcher["securityContext"], helm_launcher["labels"]) == (launcher["security_context"], launcher["labels"])
    assert helm_launcher["runK8sConfig"]["jobSpecConfig"] == launcher["run_k8s_config"]["job_spec_config"]
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == instance["run_coordinator"]["class"]
    concurrency = dict(values["concurrency"])
    assert concurrency.pop("enabled") is True  # the chart renders the limits only when enabled
    assert concurrency == camel(instance["concurrency"])  # the queue's limits and the pools
    assert values["dagsterDaemon"]["runRetries"]["maxRetries"] == instance["run_retries"]["max_retries"]
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["codeServerArgs"] == ["-m", "attribution_pipeline.definitions"] and deployment["port"] == 4000
    # with it on, the chart hands the code server's resources (512Mi) to every run pod, over the launcher's
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": False}
    assert values["postgresql"]["enabled"] is False and "postgresqlPassword" not in values["postgresql"]


def test_the_image_runs_the_code_server_as_a_non_root_user_without_secrets():
    docker = (REPO / "Dockerfile").read_text()
    instructions = [line for line in docker.replace("\\\n", " ").splitlines() if line and not line.startswith("#")]
    assert instructions[0].startswith("FROM python:3.11-slim")
    assert any(re.search(r"pip install -c requirements\.lock \.", i) for i in instructions)
    (user,) = [i for i in instructions if i.startswith("USER ")]
    assert user.split()[1].split(":")[0] not in ("root", "0")
    assert instructions[-1] == ('CMD ["dagster", "code-server", "start", "-m", "attribution_pipeline.definitions", '
                                '"-h", "0.0.0.0", "-p", "4000"]')
    assert "attribution_pipeline.definitions" in (REPO / "pyproject.toml").read_text()  # [tool.dagster] module_name
    secrets = re.compile(r"(DB_URL|DB_READ_URL|POSTGRES_URL|WEBHOOK_URL|PASSWORD|SECRET)\s*=", re.I)
    assert not [i for i in instructions if i.startswith(("ENV", "ARG")) and secrets.search(i)]
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".attribution", "tests"} <= set(ignored)
    copied = [part for i in instructions if i.startswith("COPY ") for part in i.split()[1:-1]]
    assert copied and all((REPO / c).exists() and c not in ignored for c in copied)
