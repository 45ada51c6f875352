"""Least-squares reconstruction on tiny random models: what it recovers exactly, that the
sequential pass beats dense-input calibration, masked == sliced with re-fitted weights, the refit
table's exactness at its reference, Hessian-aware selection, and `--reconstruct off` unchanged."""
import pytest
import torch

from assembly.config import RunConfig
from pruning.budget import budget_from_args
from pruning.genome import Genome, PruningPlan
from pruning.layer_stream import LayerStream
from pruning.masking import masked, refit_swapped
from pruning.obs import channel_scores
from pruning.reconstruction import InputGram, KeptStatistics, LayerRefit, solve_refit
from pruning.refit_pass import SequentialRefit
from pruning.repair import repair
from pruning.selection import column_indices
from tests.test_pruning_equivalence import make_context
from tests.tiny import tiny_inputs, tiny_llama

PLAN = PruningPlan.from_list([[1, 4], [2, 7], [0, 3], [3, 9]])  # heads and channels in every layer but one


def logits(model, x):
    with torch.no_grad():
        return model(x).logits


def test_a_removed_channel_that_is_a_combination_of_kept_ones_is_reconstructed_exactly():
    torch.manual_seed(0)
    x = torch.randn(4096, 6, dtype=torch.float64)
    x = torch.cat([x, (0.7 * x[:, 1] - 1.3 * x[:, 4] + 0.5).unsqueeze(1)], dim=1)  # column 6 = affine in 1 and 4
    weight, bias = torch.randn(5, 7, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    y = x @ weight.T + bias
    kept = torch.arange(6)  # column 6 removed
    stats = KeptStatistics(kept)
    stats.add(x.float(), y.float())
    refit = solve_refit(*stats.finish(), kept, damping=1e-9, dtype=torch.float64)
    rebuilt = x[:, :6] @ refit.weight.T + refit.bias
    assert torch.allclose(rebuilt, y, atol=1e-3 * y.abs().max())
    # the same from the whole Gram (what the refit table stores)
    gram = InputGram(7)
    gram.add(x.float())
    again = solve_refit(*gram.statistics(weight.float(), bias.float(), kept), kept, damping=1e-9, dtype=torch.float64)
    assert torch.allclose(again.weight, refit.weight, atol=1e-3) and torch.allclose(again.bias, refit.bias, atol=1e-3)
    # without the refit (slicing alone) the output is far off
    assert not torch.allclose(x[:, :6] @ weight[:, :6].T + bias, y, atol=0.1)


def test_reconstruction_beats_masks_and_sequential_beats_dense_inputs():
    model = tiny_llama()
    context = make_context(model, "query", "wanda-sp", "ls", calibration_windows=16)
    selections = context.selections(PLAN)
    calibration = context.reconstruction.calibration
    sequential = SequentialRefit(model, selections, calibration, 1e-4).all()
    dense_inputs = SequentialRefit(model, selections, calibration, 1e-4, sequential=False).all()
    x = calibration.input_ids
    dense = logits(model, x)
    with masked(model, selections):
        plain = (logits(model, x) - dense).pow(2).mean().item()
    with masked(model, selections, refits=sequential):
        assert (logits(model, x) - dense).pow(2).mean().item() < 0.5 * plain
    assert torch.equal(sequential[0].down_proj.weight, dense_inputs[0].down_proj.weight)  # layer 0 sees the same
    # On what the pruned model really feeds each layer, the sequential refit reproduces the dense
    # projection better than the refit calibrated on the dense model's inputs (it is the least-squares
    # optimum there; the other is not).
    stream = LayerStream(model, calibration, 4)
    worse_somewhere = False
    for i, (seq, naive) in enumerate(zip(sequential, dense_inputs)):
        errors = {"sequential": 0.0, "dense inputs": 0.0}

        def sink(x_in, y, _batch):
            for name, refit in (("sequential", seq.down_proj), ("dense inputs", naive.down_proj)):
                rebuilt = x_in[..., refit.kept] @ refit.weight.T + refit.bias
                errors[name] += (rebuilt - y).pow(2).sum().item()

        with refit_swapped(model, i, LayerRefit(o_proj=seq.o_proj)):
            stream.observe(i, model.model.layers[i].mlp.down_proj, sink)
        assert errors["sequential"] <= errors["dense inputs"] * (1 + 1e-4), (i, errors)
        worse_somewhere |= errors["dense inputs"] > 1.01 * errors["sequential"]
        with refit_swapped(model, i, seq):
            stream.run(i, advance=True)
    assert worse_somewhere  # the two calibrations really differ downstream


def test_the_dense_target_makes_up_for_earlier_layers():
    """Layer 0 sees the dense inputs either way; later layers, refitted to the dense model's own
    outputs, leave the pruned model closer to the dense one on the calibration windows."""
    model = tiny_llama(seed=7)
    context = make_context(model, "query", "wanda-sp", "ls", calibration_windows=16)
    selections = context.selections(PLAN)
    calibration = context.reconstruction.calibration
    local = SequentialRefit(model, selections, calibration, 1e-3, target="local").all()
    dense = SequentialRefit(model, selections, calibration, 1e-3, target="dense").all()
    assert torch.allclose(local[0].o_proj.weight, dense[0].o_proj.weight, atol=1e-4)
    x = calibration.input_ids
    reference = logits(model, x)
    errors = {}
    for name, refits in (("local", local), ("dense", dense)):
        with masked(model, selections, refits=refits):
            errors[name] = (logits(model, x) - reference).pow(2).mean().item()
    assert errors["dense"] < errors["local"], errors


@pytest.mark.parametrize("gqa", ["query", "group"])
def test_masked_equals_sliced_equals_in_place_with_refitted_weights(gqa):
    model, twin = tiny_llama(seed=3), tiny_llama(seed=3)
    context, other = make_context(model, gqa, "wanda-sp", "ls"), make_context(twin, gqa, "wanda-sp", "ls")
    plan = PLAN if gqa == "query" else PruningPlan.from_list([[1, 4], [0, 7], [1, 3], [0, 9]])
    x = tiny_inputs()
    with context.masked(plan, exact=True):
        masked_logits = logits(model, x)
    sliced = context.prune(plan, exact=True)
    assert torch.allclose(logits(sliced, x), masked_logits, atol=1e-5)
    assert sum(p.numel() for p in sliced.parameters()) == context.space.total_params(plan)  # the refit's biases priced
    in_place = other.prune_in_place(plan)  # re-fitted layer by layer as it is sliced
    assert torch.allclose(logits(in_place, x), masked_logits, atol=1e-5)
    layer = sliced.model.layers[0]
    assert layer.self_attn.o_proj.bias is not None and layer.mlp.down_proj.bias is not None
    untouched = next(i for i, layer in enumerate(plan.layers) if layer.attn_units_removed == 0)
    assert sliced.model.layers[untouched].self_attn.o_proj.bias is None  # no head removed there: no refit


@pytest.mark.parametrize("target", ["local", "dense"])
def test_the_refit_table_is_exact_at_its_reference_and_close_elsewhere(target):
    model = tiny_llama(seed=4)
    context = make_context(model, "query", "wanda-sp", "ls", calibration_windows=8)
    context.reconstruction.target = target
    budget = budget_from_args(context.space.shape, None, 0.35, context.space.min_total_params("layer"))
    context.prepare_for(budget)
    reference = context.uniform_plan(budget)
    assert context.table.is_exact_for(reference)
    selections = context.selections(reference)
    from_table = context.table.refits(reference, selections)
    exact = SequentialRefit(model, selections, context.reconstruction.calibration, 1e-2, target=target).all()
    for a, b in zip(from_table, exact):
        for p, q in ((a.o_proj, b.o_proj), (a.down_proj, b.down_proj)):
            assert (p is None) == (q is None)
            if p is not None:
                assert torch.allclose(p.weight, q.weight, atol=1e-3, rtol=1e-3)
    # another plan: the table's layers are an approximation, still far better than no refit
    other = repair(Genome("layer", (0.1, 0.55, 0.3, 0.45)), context.space, budget).plan
    x = context.reconstruction.calibration.input_ids
    dense = logits(model, x)
    errors = {}
    for name, exact_flag in (("table", False), ("exact", True)):
        with context.masked(other, exact=exact_flag):
            errors[name] = (logits(model, x) - dense).pow(2).mean().item()
    with masked(model, context.selections(other)):
        errors["none"] = (logits(model, x) - dense).pow(2).mean().item()
    assert errors["exact"] <= errors["table"] * 1.05 and errors["table"] < 0.5 * errors["none"], errors
    assert context.table.solves > 0


def test_obs_scores_reproduce_the_greedy_order_and_beat_magnitude_under_the_refit():
    torch.manual_seed(1)
    x = torch.randn(2048, 32) @ torch.randn(32, 32)  # correlated inputs
    weight = torch.randn(8, 32)
    gram = InputGram(32)
    gram.add(x)
    g = gram.finish()
    scores = channel_scores(g, weight, None, step=4, max_removed=24, damping=1e-2)
    # the first step removes the 4 channels whose OBS cost ||W_j||^2 / [H^-1]_jj is lowest
    h = g.double().clone()
    h.diagonal()[:32] += 1e-2 * h.diagonal()[:32].mean()
    first_costs = (weight.double() ** 2).sum(0) / torch.linalg.inv(h).diagonal()[:32]
    assert set(scores.argsort()[:4].tolist()) == set(first_costs.argsort()[:4].tolist())
    assert scores.unique().numel() == 32 - 8 + 1  # 24 removal positions, the never-removed share one score

    def refit_error(kept):
        kept = kept.sort().values
        refit = solve_refit(*gram.statistics(weight, None, kept), kept, 1e-2)
        y = x @ weight.T
        return (x[:, kept] @ refit.weight.T + refit.bias - y).pow(2).mean().item()

    obs_kept = scores.argsort()[16:]  # remove 16
    magnitude_kept = (weight.abs().sum(0) * x.pow(2).mean(0).sqrt()).argsort()[16:]  # Wanda-sp's choice
    assert refit_error(obs_kept) < refit_error(magnitude_kept)


@pytest.mark.parametrize("target", ["local", "dense"])
def test_obs_metric_needs_the_reference_pass_and_then_selects(target):
    model = tiny_llama(seed=5)
    context = make_context(model, "query", "obs", "ls", calibration_windows=8)
    context.reconstruction.target = target
    with pytest.raises(ValueError, match="reference pass"):
        context.selections(PLAN)
    budget = budget_from_args(context.space.shape, None, 0.35, context.space.min_total_params("layer"))
    context.prepare_for(budget)
    assert context.scores.metric == "obs"
    with context.masked(PLAN):
        assert torch.isfinite(logits(model, tiny_inputs())).all()


def test_reconstruct_off_leaves_the_kept_weights_exactly_as_they_were():
    model = tiny_llama(seed=6)
    context = make_context(model, "query", "wanda-sp", "off")
    pruned = context.prune(PLAN)
    selection = context.selections(PLAN)[1]
    dense_o = model.model.layers[1].self_attn.o_proj.weight
    assert torch.equal(pruned.model.layers[1].self_attn.o_proj.weight,
                       dense_o[:, column_indices(selection.kept_heads, 8)])
    assert pruned.model.layers[1].self_attn.o_proj.bias is None
    with context.masked(PLAN):
        masked_logits = logits(model, tiny_inputs())
    with masked(model, context.selections(PLAN)):  # the plain masks, as before reconstruction existed
        assert torch.equal(logits(model, tiny_inputs()), masked_logits)


def test_runs_stored_before_reconstruction_resume_as_they_ran():
    assert RunConfig.from_dict({"bias_compensation": "auto", "metric": "flap"}).reconstruct == "bias"
    assert RunConfig.from_dict({"bias_compensation": "auto", "metric": "wanda-sp"}).reconstruct == "off"
    assert RunConfig.from_dict({"bias_compensation": "on"}).reconstruct == "bias"
    assert RunConfig.from_dict({}).reconstruct == "ls"  # today's default for new runs
    resumed = RunConfig(max_memory="0=70GiB").resumed({"bias_compensation": "off", "metric": "wanda-sp"})
    assert resumed.reconstruct == "off" and resumed.max_memory == "0=70GiB"


def test_exact_refits_cached_on_disk_come_back_identical(tmp_path):
    model = tiny_llama(seed=8)
    context = make_context(model, "query", "wanda-sp", "ls")
    context.reconstruction.exact_cache = tmp_path
    selections = context.selections(PLAN)
    first = context.exact_refits(PLAN, selections)
    assert len(list(tmp_path.glob("exact-*.pt"))) == 1
    context._exact = {}  # as a new process would start
    again = context.exact_refits(PLAN, selections)
    for a, b in zip(first, again):
        for p, q in ((a.o_proj, b.o_proj), (a.down_proj, b.down_proj)):
            assert (p is None) == (q is None)
            if p is not None:
                assert torch.equal(p.kept, q.kept) and torch.equal(p.weight, q.weight) and torch.equal(p.bias, q.bias)


def test_a_table_folder_with_scores_in_an_older_format_is_rebuilt_not_a_crash(tmp_path):
    """Older versions pickled the OBS scores' class, which `weights_only` loading refuses: the
    folder counts as unfinished and the reference pass is made again."""
    model = tiny_llama(seed=5)
    budget = None
    for attempt in range(2):
        context = make_context(model, "query", "obs", "ls", calibration_windows=8)
        context.reconstruction.cache_dir = tmp_path
        budget = budget or budget_from_args(context.space.shape, None, 0.35, context.space.min_total_params("layer"))
        context.prepare_for(budget)
        assert context.scores.metric == "obs"
        if attempt == 0:
            made = context.scores
            (folder,) = [p.parent for p in tmp_path.glob("table-*/done.json")]
            torch.save(made, folder / "scores.pt")  # the old format: the object itself
    (folder,) = [p.parent for p in tmp_path.glob("table-*/done.json")]
    assert isinstance(torch.load(folder / "scores.pt", weights_only=True), dict)  # written again, today's format
    for old, new in zip(made.layers, context.scores.layers):
        assert torch.equal(old.channel_scores, new.channel_scores)


def test_obs_scores_follow_the_budget_a_context_is_prepared_for():
    """OBS scores come from the reference pass at a budget: a context prepared for one rate, then
    another, must select as a fresh context prepared for the second (a headline run measures several
    rates in one process; it once kept the first rate's scores and its exact-refit cache mixed them)."""
    model = tiny_llama(seed=5)
    twice, once = (make_context(model, "query", "obs", "ls", calibration_windows=8) for _ in range(2))
    budget = lambda ctx, rate: budget_from_args(ctx.space.shape, None, rate, ctx.space.min_total_params("layer"))
    twice.prepare_for(budget(twice, 0.2))
    first = [layer.channel_scores.clone() for layer in twice.scores.layers]
    twice.prepare_for(budget(twice, 0.5))
    once.prepare_for(budget(once, 0.5))
    assert any(not torch.equal(a, b.channel_scores) for a, b in zip(first, once.scores.layers))  # the rates differ
    for a, b in zip(twice.scores.layers, once.scores.layers):
        assert torch.equal(a.channel_scores, b.channel_scores) and torch.equal(a.head_scores, b.head_scores)
    plan = repair(Genome("layer", (0.5,) * len(PLAN.layers)), once.space, budget(once, 0.5)).plan
    x = tiny_inputs()
    with twice.masked(plan, exact=True):
        got = logits(model, x)
    with once.masked(plan, exact=True):
        assert torch.allclose(got, logits(model, x))
