from __future__ import annotations

import pytest


@pytest.mark.django_db
def test_the_world_fixture_builds(world):
    assert world.cp_north.dso == world.gridco
    assert len(world.voltflex_connections) == 3
