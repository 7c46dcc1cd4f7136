"""Reading sacct: job lines through submitit's parser (array ranges expanded), steps for memory."""

from __future__ import annotations

from sweeper.scheduler import JobState
from sweeper.scheduler.slurm import read_sacct

SACCT = """JobID|State|ReqMem|MaxRSS
12_[3-5%2]|PENDING|4G|
12_1|RUNNING|4G|
12_1.batch|RUNNING||1000K
12_2|CANCELLED by 1000|4G|
12_2.batch|CANCELLED||5G
13|PREEMPTED|1G|
14|PENDING|1G|
14.batch|RUNNING||1M
15|FAILED|16?|
"""


def test_sacct_states_causes_ranges_and_the_memory_a_step_used():
    ids = ["12_1", "12_2", "12_4", "13", "14", "15", "16"]
    assert read_sacct(SACCT, ids) == {
        "12_1": JobState("RUNNING"),
        "12_2": JobState("FAILED", "OUT_OF_MEMORY"),  # the poller's kill: a step's peak past ReqMem
        "12_4": JobState("PENDING"),  # inside the pending range
        "13": JobState("INTERRUPTED", "PREEMPTED"),
        "14": JobState("RUNNING"),  # slurmdbd recorded the step's start before the job's
        "15": JobState("RUNNING"),  # an end recorded before its request: still ending
        "16": JobState("UNKNOWN"),  # purged, or not yet known
    }
