"""The price table and the arithmetic of the preview's cost lines (infra/costs.py)."""

from __future__ import annotations

import json

import pytest

from infra.costs import (
    MODAL_GPU_PER_HOUR,
    CostSettings,
    Hardware,
    Prices,
    SecondsRange,
    estimate_run,
    format_seconds,
    format_usd_range,
    load_costs,
    modal_default_hardware,
)

KEY = "glm-modal:costs"


def test_one_compile_of_ten_minutes_on_8_b200_costs_what_the_recipe_says() -> None:
    # The recipe: "~$8 for ~10 minutes on 8xB200". Modal bills the GPUs and the default reservation.
    run = estimate_run("compile-kernels", "runs compile_deepgemm", modal_default_hardware("B200", 8), Prices(),
                       measured_seconds=600, configured=SecondsRange(low=1, high=2), basis="unused")  # fmt: skip
    assert run.usd[0] == run.usd[1] == pytest.approx(8 * 6.2496 / 6 + (0.125 * 0.04716 + 0.125 * 0.007992) / 6)
    assert run.basis == "last run" and run.seconds == (600, 600)
    assert run.line() == "compile-kernels: runs compile_deepgemm on 8x B200: 10m (last run), est. $8.33"


def test_the_cpu_download_is_priced_by_its_cores_and_memory() -> None:
    # 4 cores and 32 GiB: ~$0.44/h at the published rates (the recipe's "~$0.01/hr" counts neither fully).
    hardware = Hardware(cpu_cores=4, memory_gib=32)
    assert hardware.per_hour(Prices()) == pytest.approx(4 * 0.04716 + 32 * 0.007992)
    assert hardware.describe() == "4 CPU cores, 32 GiB"


def test_without_a_measured_run_the_configured_range_is_priced() -> None:
    run = estimate_run("download-weights", "runs download_model", Hardware(4, 32), Prices(), measured_seconds=None,
                       configured=SecondsRange(low=1800, high=3600), basis="config range for full weights")  # fmt: skip
    assert run.seconds == (1800, 3600) and run.basis == "config range for full weights"
    assert run.usd[1] == pytest.approx(2 * run.usd[0])
    assert "30m-1h (config range for full weights), est. $0.22-$0.44" in run.line()


def test_no_costs_key_means_modal_published_prices() -> None:
    costs, problems = load_costs(None, "B200", KEY)
    assert problems == [] and costs == CostSettings()
    assert costs.prices.gpu_per_hour == MODAL_GPU_PER_HOUR and costs.prices.read_on == "2026-11-29"


def test_a_stack_file_table_overrides_prices_as_structured_yaml_arrives() -> None:
    raw = json.dumps({"prices": {"gpu_per_hour": {"B200": 7}, "read_on": "2027-01-05"}})
    costs, problems = load_costs(raw, "B200", KEY)
    assert problems == [] and costs is not None
    assert costs.prices.gpu_per_hour == {"B200": 7} and costs.prices.read_on == "2027-01-05"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"prices": {"gpu_per_hour": {"H100": 3.9}}}, f"{KEY}.prices.gpu_per_hour: no price for B200"),
        ({"prices": {"memory_gib_per_hour": "cheap"}}, f"{KEY}.prices.memory_gib_per_hour: "),
        ({"durations": {"verify": {"low": 9, "high": 1}}}, f"{KEY}.durations.verify.low: 9 is above high (1)"),
        ("not json", f"{KEY}: must be an object"),
    ],
)
def test_a_bad_table_is_named_by_key_and_field(value: object, problem: str) -> None:
    costs, problems = load_costs(value, "B200", KEY)
    assert costs is None and len(problems) == 1 and problems[0].startswith(problem), problems


def test_durations_and_prices_read_as_people_write_them() -> None:
    assert [format_seconds(s) for s in (0.1, 45, 600, 630, 3600, 5400)] == ["0s", "45s", "10m", "10m30s", "1h",
                                                                            "1h30m"]  # fmt: skip
    assert format_usd_range((0.001, 0.004)) == "<$0.01"
    assert format_usd_range((8.333, 50.0)) == "$8.33-$50.00"
