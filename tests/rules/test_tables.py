"""Every row of SPEC §5.2 (cause + dial status → result) and §5.4 (result → CRM statuses)."""

from __future__ import annotations

import pytest

from celsync.config import ConfigError, config_from_dict
from celsync.rules.tables import StatusTables

T = StatusTables.from_config({})

# (hangup cause, dial status, result) — one case per table row, plus the "other"/"any" branches.
RESULT_CASES = [
    (0, "ANSWER", 0), (0, "", 0), (0, "CANCEL", 0),
    (16, "CANCEL", 480), (127, "CANCEL", 480), (19, "CANCEL", 480),
    (16, "CHANUNAVAIL", 500), (3, "CHANUNAVAIL", 500), (34, "CONGESTION", 500),
    (1, "ANSWER", 200), (20, "ANSWER", 200),
    (1, "NOANSWER", 404), (20, "", 404), (1, "BUSY", 404),
    (16, "", 200), (16, "ANSWER", 200),
    (16, "NOANSWER", 408),
    (16, "BUSY", 486),
    (17, "", 486), (17, "BUSY", 486),
    (18, "", 408), (18, "NOANSWER", 408),
    (19, "NOANSWER", 480), (19, "", 480),
    (21, "NOANSWER", 603), (21, "", 603),
    (26, "", 200), (26, "ANSWER", 200),
    (28, "NOANSWER", 484),
    (34, "", 500), (38, "NOANSWER", 500), (127, "", 500),
    (44, "ANSWER", 200), (44, "NOANSWER", 500), (44, "", 500),
    (58, "", 488),
    (66, "ANSWER", 200), (66, "NOANSWER", 405),
    (3, "", 0), (31, "NOANSWER", 0), (16, "DONTCALL", 0), (102, "", 0),
]


@pytest.mark.parametrize("cause,dial,result", RESULT_CASES)
def test_result_table(cause, dial, result):
    assert T.result(cause, dial)[0] == result


def test_dial_status_is_case_insensitive_and_absent_cause_is_unknown():
    assert T.result(16, "answer")[0] == 200
    assert T.result(None, "ANSWER")[0] == 0


# (result, incoming, answered) -> (bitrix24, kommo, kommo_result)
CRM_CASES = [
    (200, True, False, ("304", 6, "Missed call")),
    (200, True, True, ("200", 4, "Success call")),
    (200, False, True, ("200", 4, "Success call")),
    (404, False, False, ("404", 5, "Number out of service")),
    (405, False, False, ("405", 6, "Method not supported")),
    (405, False, True, ("405", 4, "Method not supported")),
    (408, True, False, ("304", 3, "Subscriber did not answer")),
    (408, False, False, ("304", 3, "Subscriber did not answer")),
    (480, False, False, ("304", 3, "Subscriber did not answer")),
    (484, False, False, ("484", 5, "Invalid number")),
    (486, True, False, ("304", 6, "Number busy")),
    (486, False, False, ("486", 7, "Number busy")),
    (488, False, False, ("484", 5, "Carrier error")),
    (500, False, False, ("500", 6, "Server error")),
    (500, False, True, ("500", 4, "Server error")),
    (603, False, False, ("603", 2, "Call rejected")),
    (0, True, True, ("200", 4, "Success call")),
    (0, False, True, ("200", 4, "Success call")),
    (0, True, False, ("304", 6, "Missed call")),
    (0, False, False, ("304", 6, "Missed call")),
    (999, False, False, ("304", 6, "Missed call")),  # a result with no row: two-status rule
]


@pytest.mark.parametrize("result,incoming,answered,want", CRM_CASES)
def test_crm_table(result, incoming, answered, want):
    s = T.crm_status(result, incoming=incoming, answered=answered)
    assert (s.bitrix24, s.kommo, s.kommo_result) == want


def test_config_rows_come_first():
    t = StatusTables.from_config({
        "results": [{"cause": [31], "dial": "any", "result": 200}],
        "crm": [{"result": 603, "bitrix24": "603-S", "kommo": 2, "kommo_result": "Rejected"}],
    })
    assert t.result(31, "NOANSWER")[0] == 200
    assert t.result(17, "")[0] == 486  # defaults still there
    s = t.crm_status(603, incoming=False, answered=False)
    assert (s.bitrix24, s.kommo_result) == ("603-S", "Rejected")


def test_bad_override_names_the_row():
    with pytest.raises(ConfigError, match=r"statuses\.results\[0\]"):
        config_from_dict({"statuses": {"results": [{"cause": [1], "result": 200, "oops": 1}]}})
    with pytest.raises(ConfigError, match="when"):
        config_from_dict({"statuses": {"crm": [{"result": 1, "when": "sometimes", "bitrix24": "1", "kommo": 1,
                                                 "kommo_result": "x"}]}})
