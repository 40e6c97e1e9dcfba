"""The README and docs/*.md: every relative link leads somewhere (the file it names exists
in the checkout, and a '#anchor' into a Markdown page names one of its headings, by GitHub's
rule: lower case, punctuation dropped, spaces as hyphens). The README's model zoo table is
checked by benchmarks/tests/test_model_zoo_table.py, beside its generator."""
import glob
import os
import re

import pytest

from conftest import REPO_ROOT

LINK = re.compile(r'\[[^\]]*\]\(([^)\s]+)\)')
FENCE = re.compile(r'^```.*?^```', re.MULTILINE | re.DOTALL)


def markdown_pages():
    return ['README.md'] + sorted(glob.glob('docs/*.md', root_dir=REPO_ROOT))


def read_page(page: str) -> str:
    with open(os.path.join(REPO_ROOT, page), encoding='utf-8') as stream:
        return stream.read()


def relative_links(page: str):
    """The link targets of a page outside its code blocks, web addresses left out."""
    text = FENCE.sub('', read_page(page))
    return [target for target in LINK.findall(text)
            if not re.match(r'[a-z][a-z0-9+.-]*:', target)]


def heading_anchors(page: str):
    anchors = set()
    for line in FENCE.sub('', read_page(page)).splitlines():
        heading = re.match(r'#+\s+(.*)', line)
        if heading:
            slug = re.sub(r'[^\w\- ]', '', heading.group(1).strip().lower())
            anchors.add(slug.replace(' ', '-'))
    return anchors


def test_anchors_follow_githubs_rule():
    # What GitHub renders for two headings of docs/benchmarks.md.
    assert {'2026-12-02-both-runtimes-in-benchmarkpy',
            'all-12-variants-batch-4-224x224-median-of-3'} <= heading_anchors(
                'docs/benchmarks.md')


def test_the_pages_have_links_to_check():
    assert len(relative_links('README.md')) > 20


@pytest.mark.parametrize('page', markdown_pages())
def test_every_relative_link_leads_to_a_file_and_heading(page):
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition('#')
        resolved = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path \
            else page
        if not os.path.exists(os.path.join(REPO_ROOT, resolved)):
            broken.append(f'{target}: no file {resolved}')
        elif anchor and resolved.endswith('.md') and anchor not in heading_anchors(resolved):
            broken.append(f'{target}: no heading #{anchor} in {resolved}')
    assert not broken, f'{page}: ' + '; '.join(broken)
