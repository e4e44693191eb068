"""Starting or joining Ray: embedded and quiet by default, `address=` joins a cluster."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

log = logging.getLogger(__name__)


# what must fit at once, for the messages below (Pipeline.min_cpus counts it)
AT_ONCE = "every actor pool's minimum, the group writers and one read task"


class ClusterTooSmall(ValueError):
    """The stages cannot all be scheduled at once: Ray would wait forever, so refuse to start."""


@dataclass
class RayRuntime:
    address: str | None = None
    num_cpus: int | None = None
    object_store_mb: int = 768
    resources: dict | None = None
    _started: bool = False

    def start(self, min_cpus: float = 0) -> None:
        """Connect to `address`, or start an embedded Ray sized to this machine.

        Logical CPUs are accounting, not cores: an embedded Ray gets at least `min_cpus`
        so that every actor pool and the read tasks can be scheduled at once (on 2 cores,
        2 pools at 1 CPU each would otherwise starve the reader forever).
        """
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        import ray

        if ray.is_initialized():
            have = ray.cluster_resources().get("CPU", 0.0)
            if not self.address and have < min_cpus:
                raise ClusterTooSmall(f"the Ray already started in this process has {have:g} logical CPUs; the stages "
                                      f"need {min_cpus:g} at once ({AT_ONCE})")
            return
        if self.num_cpus is not None and not self.address and self.num_cpus < min_cpus:
            raise ClusterTooSmall(
                f"{self.num_cpus} logical CPUs is fewer than the {min_cpus:g} the stages need at once ({AT_ONCE}): "
                f"give at least {int(min_cpus + 0.999)}, or leave it unset. "
                "Logical CPUs are Ray's accounting, not cores."
            )
        if self.address:
            ray.init(address=self.address, log_to_driver=False, logging_level=logging.WARNING)
            log.info("joined Ray cluster at %s", self.address)
            have = ray.cluster_resources().get("CPU", 0.0)
            if have < min_cpus:  # an autoscaling cluster grows on demand: say it, do not refuse
                log.warning("the Ray cluster at %s has %g logical CPUs now; the stages need %g at once (%s): "
                            "the build waits until the cluster has them", self.address, have, min_cpus, AT_ONCE)
        else:
            cpus = self.num_cpus or max(os.cpu_count() or 1, int(min_cpus + 0.999))
            ray.init(
                num_cpus=cpus,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
                object_store_memory=self.object_store_mb * 1024 * 1024,
                resources=self.resources,
            )
            log.info("started embedded Ray with %d logical CPUs", cpus)
        self._started = True
        _quiet_ray_data()

    def stop(self) -> None:
        import ray

        if self._started and ray.is_initialized():
            ray.shutdown()
        self._started = False


def _quiet_ray_data() -> None:
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # we draw our own per-stage bars
    for name in ("ray.data", "ray.data._internal.execution.streaming_executor"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # it warns that its own bars are off: they are, on purpose (engine draws per-stage bars)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
