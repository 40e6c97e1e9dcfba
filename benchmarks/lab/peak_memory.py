"""The peak resident memory of a stretch of this process's work, from the kernel's own
high-water mark (Linux: ``VmHWM``, reset through ``/proc/self/clear_refs``)."""
import contextlib
from typing import Iterator, List

MIB = 2 ** 20


def _status_mib(field: str) -> float:
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith(field + ':'):
                return int(line.split()[1]) * 1024 / MIB  # the file counts kB
    raise OSError(f'/proc/self/status has no {field}; this measures on Linux only')


@contextlib.contextmanager
def peak_rss_mib() -> Iterator[List[float]]:
    """Yield a list that, once the block ends, holds ``[resident MiB before the block,
    peak resident MiB during it]``."""
    with open('/proc/self/clear_refs', 'w') as clear_refs:
        clear_refs.write('5')  # the high-water mark restarts from the current RSS
    measured = [_status_mib('VmRSS')]
    yield measured
    measured.append(_status_mib('VmHWM'))
