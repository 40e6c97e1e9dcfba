"""The library as_avx2_only.py builds from avx2_only.c and preloads, as a process's memory
map names it. Plain Python (no torch, no mmrepvgg), so that as_avx2_only.py, which checks
for it in a probe process, starts at once."""

AVX2_ONLY_LIBRARY = 'libmmrepvgg_avx2_only.so'


def avx2_only_loaded(maps_text: str) -> bool:
    """Whether a ``/proc/<pid>/maps`` text maps :data:`AVX2_ONLY_LIBRARY` (the process
    runs under ``as_avx2_only.py``), also once its file is gone (`` (deleted)``)."""
    return any(line.rstrip().removesuffix(' (deleted)').endswith('/' + AVX2_ONLY_LIBRARY)
               for line in maps_text.splitlines())
