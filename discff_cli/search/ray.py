"""`search --queries FILE --ray`: the rerank stage of many queries on a pool of Ray actors.

Why this split: the shortlist costs milliseconds per query and needs the index, so the driver
keeps it; the rerank costs U-Net passes, so it is what spreads. Every actor loads the diffusion
scorer once (one GPU each when the cluster has GPUs, else a share of the CPUs) and runs the
same `Reranker` as a local search (discff_cli/search/rerank.py), so its results are the ones a local search
computes. Ray core actors with `ray.util.ActorPool` do the scheduling: a free actor takes the next
head, and results come back in the order the heads were submitted (the file's order).

On a cluster every node needs discff installed and the images (and the index directory, for
`--latents`) at the same paths as the driver.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from discff_cli.errors import DiscffError
from discff_cli.search.rerank import Fusion, Reranked


@dataclass(frozen=True)
class RerankSpec:
    """What every actor loads: the same model, engine settings, deltas, index and fusion as a local search."""

    model: str
    config: Any  # EngineConfig
    deltas: str | None
    index_dir: str
    fusion: Fusion


class RerankActor:
    """One Ray actor: a scorer loaded once (`load`), then heads reranked one query at a time."""

    def __init__(self, spec: RerankSpec, threads: int | None) -> None:
        self.spec, self.threads = spec, threads
        self.reranker = None

    def load(self) -> str:
        """Load the diffusion model; returns its fingerprint. A method, not __init__, so a failure comes
        back as its own exception (a DiscffError keeps its sentence) rather than as a dead actor."""
        import torch

        from discff_cli.engine.scorer import load_scorer
        from discff_cli.search.rerank import Reranker

        if self.threads:
            torch.set_num_threads(self.threads)
        spec = self.spec
        self.reranker = Reranker(load_scorer(spec.model, spec.config, spec.deltas), spec.index_dir, spec.fusion)
        return self.reranker.scorer.parts.fingerprint

    def rerank(self, job: tuple[str, list, tuple[str, ...], Fusion | None]) -> Reranked:
        """(query, head, families, fusion): the request's own fusion (None: the spec's), as a local search."""
        query, head, families, fusion = job
        return self.reranker.rerank(query, head, families, fusion=fusion)


class RerankPool:
    """`with RerankPool(spec, "local", None, jobs=n) as pool:` actors created on entry (they load in the
    background), `pool.ready()` waits for them, `pool.rerank(jobs)` yields each job's Reranked in order.

    Ray stops on leaving when this pool started it ("local"), on error too; actors on a cluster
    joined with "auto" or an address are killed, so their GPUs are free again.
    """

    def __init__(self, spec: RerankSpec, address: str, workers: int | None, jobs: int,
                 init_options: dict[str, Any] | None = None) -> None:
        self.spec, self.address, self.workers, self.jobs = spec, address, workers, jobs
        self.init_options = init_options or {}
        self.actors: list = []
        self._session = None

    def __enter__(self) -> "RerankPool":
        from discff_cli.clip_resolve import library_errors
        from index.ray_cluster import ray_session

        self._session = ray_session(self.address, self.init_options)
        with library_errors():
            ray = self._session.__enter__()
        try:
            self.actors = self._start(ray)
        except BaseException:
            self._session.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        import ray

        try:
            for actor in self.actors:
                ray.kill(actor)
        finally:
            self._session.__exit__(*exc)

    def _start(self, ray) -> list:
        """One actor per GPU (num_gpus=1), else --workers CPU actors sharing the CPUs; never more than jobs."""
        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), max(1, int(resources.get("CPU", 1)))
        use_gpus = gpus > 0 and self.spec.config.device != "cpu"
        count = max(1, min(self.workers or (gpus if use_gpus else max(1, cpus // 2)), self.jobs))
        if use_gpus:  # more workers than GPUs share them; Ray's CUDA_VISIBLE_DEVICES gives each its own
            options, threads = {"num_gpus": min(1.0, gpus / count), "num_cpus": min(1.0, cpus / count)}, None
        else:  # a fractional share never asks for more CPUs than there are (which would wait forever)
            options, threads = {"num_cpus": cpus / count}, max(1, cpus // count)
        actor_class = ray.remote(RerankActor)
        return [actor_class.options(**options).remote(self.spec, threads) for _ in range(count)]

    def ready(self) -> str:
        """Wait until every actor has loaded the model; returns its fingerprint (for --json's provenance)."""
        import ray

        with worker_errors():
            fingerprints = ray.get([actor.load.remote() for actor in self.actors])
        return fingerprints[0]

    def rerank(self, jobs: Sequence[tuple[str, list, tuple[str, ...], Fusion | None]]) -> Iterator[Reranked]:
        """Each (query, head, families, fusion)'s Reranked, in the order of `jobs`, as soon as it and those before it are done."""
        from ray.util import ActorPool

        results = ActorPool(self.actors).map(lambda actor, job: actor.rerank.remote(job), list(jobs))
        while True:
            with worker_errors():
                outcome = next(results, None)
            if outcome is None:
                return
            yield outcome


def worker_errors():
    """Context manager: an error on an actor becomes one sentence (a DiscffError keeps its own)."""
    from contextlib import contextmanager

    from ray.exceptions import RayActorError, RayError, RayTaskError

    @contextmanager
    def convert():
        try:
            yield
        except RayTaskError as exc:
            cause = exc.cause
            if isinstance(cause, DiscffError):
                raise DiscffError(str(cause), cause.exit_code) from None
            raise DiscffError(f"A Ray rerank worker failed: {type(cause).__name__}: {_first_line(cause)}") from None
        except RayActorError as exc:
            raise DiscffError(f"A Ray rerank worker died ({_first_line(exc)}); see the Ray logs "
                              "(/tmp/ray/session_latest/logs) and run again.") from None
        except RayError as exc:
            raise DiscffError(f"Ray failed during the rerank: {_first_line(exc)}") from None

    return convert()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
