"""Search-space and budget logic: pure functions, no training."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest

from kaon.errors import ConfigError
from kaon.nn.spec import parse_spec
from kaon.tune import study as study_module
from kaon.tune.budget import (
    EPOCH_OVERHEAD,
    FINISH_SECONDS,
    STARTUP_SECONDS,
    Budget,
    check_feasible,
    epoch_seconds,
    fitted_epochs,
    format_duration,
    measured_speedup,
    one_fit,
    own_cutoff,
    parse_duration,
    retrain_estimate,
    retrain_per_trial_second,
    retrain_seconds,
    trial_ends_by,
)
from kaon.tune.runner import Outcome
from kaon.tune.space import SearchSpace, load_space, portfolio, suggest, to_spec
from kaon.tune.study import (
    TuneConfig,
    _Search,
    adapt,
    check_trial_time,
    cv_sizes,
    retrain_epochs,
    trial_cap,
)


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("10m", 600), ("1.5h", 5400), ("45", 45),
                                          ("1h30m", 5400), ("2m 30s", 150)])
def test_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["ten minutes", "30m1h", "1m1m", "1x", ""])
def test_a_bad_duration_is_named(text: str) -> None:
    with pytest.raises(ConfigError, match="is not a duration") as refused:
        parse_duration(text)
    assert repr(text) in refused.value.message and "1h30m" in (refused.value.hint or "")


def test_every_sampled_configuration_is_a_valid_training_spec() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(40):
        trial = study.ask()
        spec = parse_spec(to_spec("t", "mnist", suggest(trial, SearchSpace())))
        assert spec.model.family in ("mlp", "cnn", "resnet-small")  # type: ignore[union-attr]
        study.tell(trial, 0.0)


def test_a_fixed_trial_reproduces_the_same_spec() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2))
    trial = study.ask()
    first = suggest(trial, SearchSpace())
    again = suggest(optuna.trial.FixedTrial(trial.params), SearchSpace())
    assert first == again


def test_a_space_file_overrides_defaults_and_rejects_unknown_keys(tmp_path: Path) -> None:
    good = tmp_path / "space.yaml"
    good.write_text("families: [mlp]\nepochs: {low: 2, high: 3}\n")
    space = load_space(good)
    assert space.families == ["mlp"] and space.max_epochs == 3
    bad = tmp_path / "bad.yaml"
    bad.write_text("familys: [mlp]\n")
    with pytest.raises(ConfigError, match="familys"):
        load_space(bad)


def test_the_search_stops_early_enough_for_the_retrain() -> None:
    budget = Budget(start=0.0, total=300.0)
    assert budget.search_cutoff(retrain_estimate=60.0) == 300.0 - 60.0 - 5.0
    assert budget.may_launch(now=200.0, retrain_estimate=60.0, min_trial=30.0)
    assert not budget.may_launch(now=210.0, retrain_estimate=60.0, min_trial=30.0)


def test_the_retrain_estimate_trains_on_the_validation_images_and_validates_on_none() -> None:
    # a trial's epoch: steps on 900 images and a pass over 100 (a third of a step each); the
    # retrain's: steps on all 1000
    assert retrain_estimate(110.0, n_train=900, n_val=100) == pytest.approx(
        100 * 1000 / (900 + 100 / 3) * 1.1)


def test_the_speedup_measured_from_a_trial_is_its_fit_against_one_on_all_cores() -> None:
    # 4 epochs of 900 steps and 100 validation images (a third of a step each) at 1 ms an
    # image on all cores, with the 1.2 epoch overhead: 4.48 s alone
    assert EPOCH_OVERHEAD == 1.2
    assert measured_speedup(8.96, 4, 1e-3, 900, 100) == pytest.approx(2.0)
    assert measured_speedup(4.48, 2, 1e-3, 900, 100) == pytest.approx(2.0)  # 2 epochs in 4.48
    # the retrain estimate it gives is the model's epochs on all cores, train + validation
    per_epoch = retrain_seconds(STARTUP_SECONDS + 8.96, 900, 100, 2.0) / 4
    assert per_epoch == pytest.approx(1e-3 * 1000 * EPOCH_OVERHEAD)


def test_the_retrain_estimate_divides_by_the_retrains_speedup_never_multiplies() -> None:
    one = retrain_estimate(110.0, n_train=900, n_val=100)
    assert retrain_estimate(110.0, n_train=900, n_val=100, speedup=1.6) == pytest.approx(one / 1.6)
    assert retrain_estimate(110.0, n_train=900, n_val=100, speedup=0.5) == pytest.approx(one)


def test_a_budget_too_small_for_one_trial_is_refused() -> None:
    with pytest.raises(ConfigError, match="too small"):
        check_feasible(left=20.0, min_trial=15.0, n_train=1000, n_val=100)
    check_feasible(left=100.0, min_trial=15.0, n_train=1000, n_val=100)


def test_a_budget_spent_by_the_checks_names_the_budget_never_a_negative_time() -> None:
    # `--time 1s`: the checks alone took longer than the budget
    with pytest.raises(ConfigError) as refused:
        check_feasible(left=-0.6, min_trial=11.0, n_train=500, n_val=100, total=1.0)
    message = refused.value.message
    assert "A --time of 1s is too small" in message and "-0s" not in message, message
    assert "needs about 11s" in message
    assert refused.value.hint is not None and "--time 1m or more" in refused.value.hint
    with pytest.raises(ConfigError) as refused:
        check_feasible(left=-1.4, min_trial=11.0, n_train=500, n_val=100)
    assert "-1s" not in refused.value.message and "0s left" in refused.value.message


def test_format_duration_writes_time_flags() -> None:
    assert [format_duration(s) for s in (1, 90, 60, 300, 7200, 1.5)] == [
        "1s", "90s", "1m", "5m", "2h", "1.5s"]


def test_feasibility_and_the_first_launch_agree_on_the_retrain_estimate() -> None:
    # 30 s, a 10 s cheapest trial, a 20 s cap: the search would wait for a launch that can
    # never come (it estimates the retrain from the cap until a trial finishes), so refuse
    total, min_trial, cap, n_train, n_val = 30.0, 10.0, 20.0, 400, 200
    launch = Budget(0.0, total).may_launch(5.0, retrain_estimate(cap, n_train, n_val), min_trial)
    assert not launch
    with pytest.raises(ConfigError, match="too small"):
        check_feasible(total - 2, min_trial, n_train, n_val, cap)
    # and a budget that does launch passes
    total, cap = 75.0, 30.0
    assert Budget(0.0, total).may_launch(5.0, retrain_estimate(cap, n_train, n_val), min_trial)
    check_feasible(total - 2, min_trial, n_train, n_val, cap)


def test_a_cross_validated_trial_is_several_fits_and_the_retrain_one() -> None:
    assert one_fit(70.0, folds=3) == pytest.approx(10 + 60 / 3)
    assert one_fit(70.0, folds=0) == 70.0
    # a 60 s cap of three fits budgets a retrain of one (scaled to train + val), not of three
    check_feasible(73.0, 15.0, 400, 200, cap=60.0, folds=3)
    with pytest.raises(ConfigError, match="too small"):
        check_feasible(73.0, 15.0, 400, 200, cap=60.0)


def test_a_cross_validated_trial_gets_a_larger_share_of_the_budget() -> None:
    sizes = {"min_trial": 10.0}
    assert trial_cap(config(cv_folds=3), sizes) == pytest.approx(0.6 * 300)
    assert trial_cap(config(cv_folds=0), sizes) == pytest.approx(0.4 * 300)
    assert trial_cap(config(cv_folds=3, trial_seconds=50), sizes) == 50


def test_a_trial_time_longer_than_the_budget_names_the_conflict() -> None:
    with pytest.raises(ConfigError) as refused:
        check_trial_time(config(time_seconds=60, trial_seconds=300, cv_folds=0), 11.0)
    message, hint = refused.value.message, refused.value.hint or ""
    assert "--trial-time 5m is longer than the whole --time 1m" in message, message
    assert "Lower --trial-time" in hint and "--time 13m" in hint, hint  # 5m / 40%
    check_trial_time(config(time_seconds=600, trial_seconds=120), 11.0)  # fits: no error
    with pytest.raises(ConfigError, match="--trial-time 5s is shorter than the cheapest"):
        check_trial_time(config(time_seconds=600, trial_seconds=5), 11.0)


# ---- data-dependent defaults ---------------------------------------------------------------------
def config(**changes: object) -> TuneConfig:
    return TuneConfig.model_validate({"dataset": "breastmnist", "time_seconds": 300,
                                      "workers": 1, **changes})


def test_a_small_validation_split_turns_on_three_fold_cross_validation() -> None:
    assert adapt(config(), n_train=546, n_val=78).cv_folds == 3
    assert adapt(config(), n_train=54000, n_val=6000).cv_folds == 0
    assert adapt(config(cv_folds=0), n_train=546, n_val=78).cv_folds == 0  # asked for: kept
    assert adapt(config(cv_folds=5), n_train=54000, n_val=6000).cv_folds == 5


def test_trials_are_scored_on_perturbed_images_when_cross_validated_unless_told() -> None:
    assert adapt(config(), n_train=546, n_val=78).robust is True
    assert adapt(config(), n_train=54000, n_val=6000).robust is False
    assert adapt(config(cv_folds=0), n_train=546, n_val=78).robust is False
    assert adapt(config(robust=False), n_train=546, n_val=78).robust is False  # asked for
    assert adapt(config(robust=True), n_train=54000, n_val=6000).robust is True


def test_few_images_stretch_the_default_epochs_but_not_a_space_file_s() -> None:
    small = adapt(config(), n_train=546, n_val=78)
    assert (small.space.epochs.low, small.space.epochs.high) == (18, 72)  # 4000 // 624 = 6
    large = adapt(config(), n_train=54000, n_val=6000)
    assert (large.space.epochs.low, large.space.epochs.high) == (3, 12)
    mine = SearchSpace.model_validate({"epochs": {"low": 2, "high": 4}})
    kept = adapt(config(space=mine), n_train=546, n_val=78)
    assert (kept.space.epochs.low, kept.space.epochs.high) == (2, 4)
    # what is stored with the study reads back to the same stretched space
    again = TuneConfig.model_validate(small.model_dump(mode="json"))
    assert adapt(again, n_train=546, n_val=78).space == small.space


def test_one_fit_under_cross_validation_holds_out_a_fold_of_train_and_val() -> None:
    assert cv_sizes(546, 78, 3) == (416, 208)
    assert cv_sizes(546, 78, 0) == (546, 78)


def test_one_fold_is_not_cross_validation() -> None:
    with pytest.raises(ValueError, match="1 fold is not cross-validation"):
        config(cv_folds=1)


# ---- warm start ---------------------------------------------------------------------------------
def test_every_portfolio_configuration_is_a_valid_training_spec() -> None:
    entries = portfolio(SearchSpace())
    assert [e["family"] for e in entries] == ["cnn", "resnet-small", "mlp"]
    for params in entries:
        choice = suggest(optuna.trial.FixedTrial({**params, "epochs": 5}), SearchSpace())
        spec = parse_spec(to_spec("t", "mnist", choice))
        assert spec.epochs == 5 and spec.data.augment.hflip is False  # safe for digits, X-rays


def test_the_portfolio_moves_into_a_narrower_space_and_drops_what_it_leaves_out() -> None:
    space = SearchSpace.model_validate({
        "families": ["cnn", "resnet-small"], "cnn_width": [8, 16], "cnn_stages": {"low": 2,
                                                                               "high": 2},
        "optimizers": ["sgd"], "batch_sizes": [32, 64], "dropout": {"low": 0.2, "high": 0.3}})
    entries = portfolio(space)
    assert [e["family"] for e in entries] == ["cnn", "resnet-small"]  # no mlp in this space
    cnn = entries[0]
    assert (cnn["cnn_width"], cnn["cnn_stages"], cnn["batch_size"]) == (16, 2, 64)  # nearest
    assert cnn["dropout"] == 0.2 and cnn["optimizer"] == "sgd" and "adam_lr" not in cnn
    assert space.sgd_lr.low < cnn["sgd_lr"] < space.sgd_lr.high
    for params in entries:  # every projected entry is a configuration of this space
        suggest(optuna.trial.FixedTrial({**params, "epochs": 3}), space)


def test_the_sgd_resnet_takes_the_adam_rate_in_a_space_without_sgd() -> None:
    space = SearchSpace.model_validate({"families": ["resnet-small"],
                                        "optimizers": ["adamw"]})
    (resnet,) = portfolio(space)
    assert resnet["optimizer"] == "adamw" and "sgd_lr" not in resnet
    assert space.adam_lr.low < resnet["adam_lr"] < space.adam_lr.high
    suggest(optuna.trial.FixedTrial({**resnet, "epochs": 3}), space)


def test_warm_start_epochs_fit_the_trial_cap() -> None:
    # 1 ms per image, 1,000 train + 300 val images: 1.1 s of steps, 1.32 s an epoch; the
    # cap less the 10 s start-up (and 0.5 s for each later fold) is theirs
    assert fitted_epochs(1e-3, 1000, 300, folds=0, cap=23.5, low=3, high=12) == 10
    assert fitted_epochs(1e-3, 1000, 300, folds=0, cap=100, low=3, high=12) == 12
    assert fitted_epochs(1e-3, 1000, 300, folds=2, cap=23.5, low=3, high=12) == 4
    assert fitted_epochs(1e-3, 1000, 300, folds=3, cap=12, low=3, high=12) is None


def test_fitted_epochs_leave_room_for_the_perturbed_pass() -> None:
    # 10 ms per image, 100 train + 300 val: 2.4 s an epoch; the perturbed pass over the 300
    # validation images is a forward pass, a third of a step each: 1 s
    assert fitted_epochs(1e-2, 100, 300, folds=0, cap=30, low=3, high=12) == 8
    assert fitted_epochs(1e-2, 100, 300, folds=0, cap=30, low=3, high=12, robust=True) == 7


def test_class_weights_are_a_dimension_of_the_space_and_reach_the_spec(tmp_path: Path) -> None:
    assert SearchSpace().class_weight == ["none"]  # the default trains as the data is
    file = tmp_path / "space.yaml"
    file.write_text("class_weight: [balanced]\n")
    space = load_space(file)
    for params in portfolio(space):  # the warm start follows the space
        choice = suggest(optuna.trial.FixedTrial({**params, "epochs": 3}), space)
        assert parse_spec(to_spec("t", "mnist", choice)).class_weight == "balanced"
    with pytest.raises(ConfigError, match="class_weight"):
        file.write_text("class_weight: [inverse]\n")
        load_space(file)


def test_a_trial_ends_its_fits_a_margin_before_it_would_be_killed() -> None:
    assert trial_ends_by(kill_at=1180.0, launched=1000.0) == pytest.approx(1174.6)  # 3%
    assert trial_ends_by(kill_at=1010.0, launched=1000.0) == 1009.0  # at least a second


def _finished(epochs: int = 4, fit_seconds: float = 40.0, value: float = 0.9,
              family: str | None = None, **attrs: object) -> optuna.trial.FrozenTrial:
    """A complete trial of the default space's epochs (and a model family, if given)."""
    params: dict[str, object] = {"epochs": epochs}
    dists: dict[str, optuna.distributions.BaseDistribution] = {
        "epochs": optuna.distributions.IntDistribution(3, 12)}
    if family:
        params["family"] = family
        dists["family"] = optuna.distributions.CategoricalDistribution(["cnn", "mlp"])
    return optuna.trial.create_trial(params=params, distributions=dists, value=value,
                                     user_attrs={"fit_seconds": fit_seconds, **attrs})


def test_the_retrain_trains_longer_only_a_trial_whose_epochs_its_time_set() -> None:
    # 4 epochs in 40 s of fitting: 10 s an epoch (900 train images, 100 validated), 10.7 s
    # on train + val without validation at the trial's pace, 5.4 s at a speed-up of 2
    sizes = {"n_train": 900, "n_val": 100, "speedup": {}}
    space = SearchSpace()
    chosen = _finished(4, 40.0)  # the search chose 4 epochs: the retrain keeps them
    assert retrain_epochs(chosen, space, sizes, left=1000.0) == 4
    assert retrain_epochs(chosen, space, sizes, left=35.0) == 3  # what fits the time left
    assert retrain_epochs(chosen, space, sizes, left=1.0) == 1  # never none
    fitted = _finished(4, 40.0, warm_start=True)  # the portfolio's: fitted to the trial cap
    assert retrain_epochs(fitted, space, sizes, left=100.0) == 9
    assert retrain_epochs(fitted, space, sizes, left=1000.0) == 12  # the space's most
    shortened = _finished(6, 40.0, epochs_trained=4)  # sampled 6, ended by its time after 4
    assert retrain_epochs(shortened, space, sizes, left=100.0) == 6  # the sampler's, no more
    assert retrain_epochs(shortened, space, sizes, left=30.0) == 2
    fast = {**sizes, "speedup": {"cnn": 2.0}}
    cnn = _finished(4, 40.0, family="cnn", warm_start=True)
    assert retrain_epochs(cnn, space, fast, left=100.0) == 12  # 100 s hold 18 at 5.4 s
    assert retrain_epochs(cnn, space, fast, left=50.0) == 9


def test_the_search_keeps_room_to_train_a_time_limited_best_longer() -> None:
    # one fit of 40 s (50 s with the start-up) at 4 epochs, 900 + 100 images: a plain
    # retrain is 40 * 1000 / (900 + 100 / 3) * 1.1 = 47.1 s, one of the space's 12 epochs
    # three times that
    cfg = TuneConfig(dataset="tiny", time_seconds=600, workers=1)
    sizes = {"n_train": 900, "n_val": 100, "min_trial": 1.0, "speedup": {}}

    def estimate(*trials: optuna.trial.FrozenTrial, total: float = 600,
                 spent: float = 0.0) -> float:
        study = optuna.create_study(direction="maximize")
        study.add_trials(trials)
        search = _Search(study, cfg.model_copy(update={"time_seconds": total}), sizes,
                         Budget(time.monotonic() - spent, total), 0.0)
        return search._retrain_estimate()

    def trial(value: float, **attrs: object) -> optuna.trial.FrozenTrial:
        return _finished(value=value, **attrs)  # 4 epochs in 40 s

    plain = 40 * 1000 / (900 + 100 / 3) * 1.1
    assert estimate(trial(0.9)) == pytest.approx(plain)  # the sampler chose its epochs
    assert estimate(trial(0.9, warm_start=True)) == pytest.approx(plain * 3)  # 12 of 4
    assert estimate(trial(0.9, warm_start=True), total=200) == pytest.approx(100)  # half
    # only the best is trained longer: a time-limited trial behind it needs no more room
    assert estimate(trial(0.9), trial(0.8, warm_start=True)) == pytest.approx(plain)
    # sampled 4 epochs, shortened to 3 by its time: its fit of 3 epochs, times 4 / 3
    assert estimate(trial(0.8), trial(0.9, epochs_trained=3)) == pytest.approx(plain * 4 / 3)
    # never so much that the cut-off falls sooner than the cheapest trial (1 s) from now:
    # 500 s spent of 600, 5 s to finish
    assert estimate(trial(0.9, warm_start=True), spent=500) == pytest.approx(94, abs=0.5)


def test_the_search_keeps_the_best_trials_retrain_and_no_other_finished_trials() -> None:
    # 4 epochs in fits of 40 s (the best, a CNN, retrained twice as fast) and 120 s (an MLP
    # behind it): retrains of 23.6 s and 141.4 s; the MLP's is never run (decision 0034)
    cfg = TuneConfig(dataset="tiny", time_seconds=600, workers=2)
    sizes = {"n_train": 900, "n_val": 100, "min_trial": 1.0, "speedup": {"cnn": 2.0}}
    study = optuna.create_study(direction="maximize")
    study.add_trials([_finished(value=0.9, family="cnn"),
                      _finished(value=0.8, fit_seconds=120.0, family="mlp")])
    start = time.monotonic()
    search = _Search(study, cfg, sizes, Budget(start, 600), 0.0)
    assert search._retrain_estimate() == pytest.approx(40 * 1000 / (900 + 100 / 3) * 1.1 / 2)
    # a trial launched 100 s before the deadline ends by its own cut-off, so that its retrain
    # fits should it finish as the best: the CNN's retrain runs twice as fast as the MLP's
    launched = start + 500
    pace = {f: retrain_per_trial_second(900, 100, 1, s) for f, s in (("cnn", 2.0), ("mlp", 1))}
    for family, per_second in pace.items():
        end = search.own_cutoff(launched, family)
        retrain = per_second * (end - launched)  # all of its time counted as fitting
        assert end + retrain + FINISH_SECONDS == pytest.approx(start + 600)
    assert search.own_cutoff(launched, "cnn") > search.own_cutoff(launched, "mlp")


def test_a_trial_ends_in_time_for_its_own_retrain() -> None:
    # a second of one fit at a trial's pace: 1.1 * (900 + 100) / (900 + 100 / 3) s of
    # retrain at the trial's pace, half that at a speed-up of 2; a third under three folds
    # (the trial made three fits, the retrain makes one)
    per_second = retrain_per_trial_second(900, 100, 1, 2.0)
    assert per_second == pytest.approx(1.1 * 1000 / (900 + 100 / 3) / 2)
    assert retrain_per_trial_second(900, 100, 3, 2.0) == pytest.approx(per_second / 3)
    end = own_cutoff(1000.0, 1200.0, per_second)
    assert end + per_second * (end - 1000) + FINISH_SECONDS == pytest.approx(1200.0)
    assert own_cutoff(1000.0, 1200.0, 0.0) == pytest.approx(1200.0 - FINISH_SECONDS)


@pytest.mark.parametrize("folds", [0, 3])
def test_a_trial_that_wins_at_its_own_cutoff_leaves_the_time_its_retrain_needs(
        folds: int) -> None:
    # a CNN (a retrain speed-up of 2) launched 300 s before the deadline fits until its own
    # cut-off; once it is the best, the cut-off its retrain's estimate sets is where it
    # ended: the retrain fits (its fits are the trial's time, a fold's share each)
    cfg = TuneConfig(dataset="tiny", time_seconds=600, workers=2, cv_folds=folds)
    sizes = {"n_train": 900, "n_val": 100, "min_trial": 1.0, "speedup": {"cnn": 2.0}}
    study = optuna.create_study(direction="maximize")
    start = time.monotonic()
    search = _Search(study, cfg, sizes, Budget(start, 600), 0.0)
    launched = start + 300
    end = search.own_cutoff(launched, "cnn")
    study.add_trial(_finished(fit_seconds=(end - launched) / max(folds, 1), family="cnn"))
    search._estimate = search._retrain_estimate()
    assert search.cutoff() == pytest.approx(end)


def test_a_trial_is_told_to_end_by_its_own_cutoff_when_that_comes_first(
        monkeypatch: pytest.MonkeyPatch) -> None:
    told: dict[str, float] = {}

    def run_trial(trial: optuna.Trial, job: dict[str, object], deadline: Callable[[], float],
                  *args: object, **kwargs: object) -> Outcome:
        told.update(ends_by=float(job["ends_by"]), kill=deadline())  # type: ignore[arg-type]
        return Outcome("pruned", 0.5, 1)

    monkeypatch.setattr(study_module, "run_trial", run_trial)
    cfg = TuneConfig(dataset="tiny", time_seconds=600, workers=2)
    sizes = {"n_train": 900, "n_val": 100, "min_trial": 1.0, "speedup": {"cnn": 2.0}}
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"family": "cnn"})
    best = study.ask()
    suggest(best, cfg.space)
    best.set_user_attr("fit_seconds", 1.0)  # a best whose retrain takes about nothing
    study.tell(best, 0.9)
    search = _Search(study, cfg, sizes, Budget(time.monotonic() - 500, 600), 0.0)
    study.enqueue_trial({"family": "cnn"})
    launched = time.monotonic()
    search._run(study.ask(), launched)  # 100 s left: the cut-off is 94 s away, its own 60 s
    own = search.own_cutoff(launched, "cnn")
    assert own < search.cutoff() - 20
    assert told["kill"] == pytest.approx(own)
    assert told["ends_by"] == pytest.approx(trial_ends_by(own, launched))
    # a trial starts only if the cheapest fits before its own cut-off at a trial's pace
    # (44 s from now of the 95 s left) as well as before the search's (94 s)
    sizes["min_trial"] = 30.0
    assert search.may_launch(time.monotonic())
    sizes["min_trial"] = 50.0
    assert not search.may_launch(time.monotonic())


def test_a_completed_portfolio_trial_sets_its_familys_retrain_speedup(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # 2 cores, a trial on 1; the timings before the search: a speed-up of 1.2, and 1 ms an
    # image on all cores
    monkeypatch.setattr(study_module, "usable_cores", lambda: 2)
    cfg = TuneConfig(dataset="tiny", time_seconds=600, workers=2)
    sizes = {"n_train": 900, "n_val": 100, "min_trial": 1.0, "speedup": {"cnn": 1.2},
             "all_cores": {"cnn": 1e-3}}
    study = optuna.create_study(direction="maximize")
    search = _Search(study, cfg, sizes, Budget(time.monotonic(), 600), 0.0)
    alone = epoch_seconds(1e-3, 900, 100) * 4  # its 4 epochs on all cores, alone

    def told(state: str, fit_seconds: float, warm: bool, **info: object) -> float:
        study.enqueue_trial({"family": "cnn", "epochs": 4},
                            user_attrs={"warm_start": True} if warm else {})
        trial = study.ask()
        trial.suggest_categorical("family", ["cnn", "mlp"])
        trial.suggest_int("epochs", 3, 12)
        outcome = Outcome(state, 0.9, 4, info={"fit_seconds": fit_seconds, **info})
        search._tell(trial, outcome)
        search._measure_speedup(trial, outcome, warm)
        return float(sizes["speedup"]["cnn"])

    assert told("complete", 3 * alone, warm=False) == 1.2  # a sampled model: not timed
    assert told("timeout", 3 * alone, warm=True) == 1.2  # no whole fit to go by
    assert told("complete", 3 * alone, warm=True) == pytest.approx(3.0, abs=1e-3)
    assert study.user_attrs["speedup"] == {"cnn": pytest.approx(3.0, abs=1e-3)}  # --resume
    assert told("complete", 0.5 * alone, warm=True) == 1.0  # never slower than a trial
    assert told("complete", 9 * alone, warm=True) == 4.0  # at most 2 x cores / threads
    # shortened by its time to 2 epochs: 2 epochs' fit
    assert told("complete", alone, warm=True, epochs_trained=2) == pytest.approx(2.0, abs=1e-3)
