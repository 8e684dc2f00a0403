"""The memory bench's own arithmetic (bench/memory.py, bench/memprobe.py): where the RSS
is from, read from smaps, glibc's and pymalloc's own reports, and its arguments."""

from __future__ import annotations

import pytest

from bench import memory, memprobe

MB = 1024 * 1024


def _mapping(start: int, size: int, rss_kb: int, name: str = "", perms: str = "rw-p") -> str:
    header = f"{start:x}-{start + size:x} {perms} 00000000 00:00 0"
    return "\n".join(
        [
            f"{header}                          {name}".rstrip(),
            f"Size: {size // 1024} kB",
            f"Rss: {rss_kb} kB",
        ]
    )


def test_smaps_breakdown_tells_files_heap_arenas_and_the_rest_apart() -> None:
    base = 0x7F0000000000  # 64 MB-aligned
    smaps = "\n".join(
        [
            _mapping(0x55D000000000, 2 * MB, 100, "/usr/bin/python3.11"),
            _mapping(0x55D001000000, 40 * MB, 30 * 1024, "[heap]"),
            # one glibc arena heap: a used part and the rest of its 64 MB reserved
            _mapping(base, 8 * MB, 5 * 1024),
            _mapping(base + 8 * MB, 56 * MB, 0, perms="---p"),
            # an anonymous mapping elsewhere (a pymalloc arena)
            _mapping(base + 64 * MB + 4096, MB, 1024),
            _mapping(0x7F1000000000, 3 * MB, 2 * 1024, "/usr/lib/libssl.so.3"),
        ]
    )
    assert memory.smaps_breakdown(smaps) == {
        "files": round((100 + 2048) * 1024 / 1e6, 1),
        "heap": round(30 * MB / 1e6, 1),
        "arenas": round(5 * MB / 1e6, 1),
        "other": round(MB / 1e6, 1),
        "arena_count": 1.0,
    }


def test_an_unaligned_or_partial_block_is_not_an_arena() -> None:
    base = 0x7F0000000000
    smaps = "\n".join([_mapping(base + 4096, 64 * MB, 10 * 1024), _mapping(base + 128 * MB, 32 * MB, 1024)])
    out = memory.smaps_breakdown(smaps)
    assert out["arena_count"] == 0.0
    assert out["arenas"] == 0.0
    assert out["other"] == round(11 * MB / 1e6, 1)


def test_settled_is_where_rss_stopped_moving() -> None:
    samples = [(0.0, 0.2), (5.0, 150.0), (10.0, 160.0), (15.0, 163.0), (20.0, 163.5), (25.0, 163.8)]
    assert memory.settled(samples) == 15.0
    assert memory.settled([(0.0, 1.0)]) == 0.0
    assert memory.settled([]) != memory.settled([])  # NaN


def test_variants_parse_to_a_name_and_an_environment() -> None:
    assert memory.parse_variant("arena2:MALLOC_ARENA_MAX=2,A=b=c") == (
        "arena2",
        {"MALLOC_ARENA_MAX": "2", "A": "b=c"},
    )
    assert memory.parse_variant("plain") == ("plain", {})
    with pytest.raises(ValueError):
        memory.parse_variant("x:NOVALUE")
    with pytest.raises(ValueError):
        memory.parse_variant(":A=1")


MALLOC_INFO = """<malloc version="1">
<heap nr="0">
<sizes>
</sizes>
<total type="fast" count="0" size="0"/>
<total type="rest" count="3" size="1000"/>
<system type="current" size="5000"/>
<system type="max" size="5000"/>
</heap>
<heap nr="1">
<sizes>
</sizes>
<total type="fast" count="2" size="64"/>
<total type="rest" count="1" size="200"/>
<system type="current" size="3000"/>
</heap>
<total type="fast" count="2" size="64"/>
<total type="rest" count="4" size="1200"/>
<total type="mmap" count="1" size="4096"/>
<system type="current" size="8000"/>
<system type="max" size="8000"/>
</malloc>
"""


def test_glibc_totals_are_the_documents_closing_totals() -> None:
    assert memprobe.glibc_totals(MALLOC_INFO) == {"arenas": 2, "system": 8000, "free": 1264, "mmap": 4096}


DEBUGMALLOCSTATS = """Small block threshold = 512, in 32 size classes.
# arenas allocated total           =                  178
# arenas reclaimed                 =                   97
# arenas highwater mark            =                   81
# arenas allocated current         =                   80
80 arenas * 1048576 bytes/arena    =           83,886,080

# bytes in allocated blocks        =           80,000,000
# bytes in available blocks        =            2,000,000
0 unused pools * 16384 bytes       =                    0
# bytes lost to pool headers       =              100,000
# bytes lost to quantization       =              500,000
# bytes lost to arena alignment    =                    0
Total                              =           83,886,080
"""


def test_pymalloc_totals_read_the_arena_counts_and_bytes() -> None:
    assert memprobe.pymalloc_totals(DEBUGMALLOCSTATS) == {
        "arenas_now": 80,
        "arenas_peak": 81,
        "arena_bytes": 82_600_000,
        "allocated_blocks_bytes": 80_000_000,
    }
