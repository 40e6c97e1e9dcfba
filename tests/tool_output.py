"""Reading what the tools print, written apart from the tools' own formatting code."""
import json
import re


def parse_test_metrics(output: str) -> dict:
    """The metrics of the last ``test metrics: {json}`` line of a tool's output."""
    lines = re.findall(r'^test metrics: (.*)$', output, flags=re.M)
    assert lines, f'no "test metrics: " line in the output: {output[-2000:]}'
    return json.loads(lines[-1])
