"""``mddbench``: run, distill, evaluate, inspect and publish medical dataset distillation results.

Every option says its default in ``--help`` (:class:`HelpFormatter`); one concept has one name in every
command (``--eval-model``, ``--eval-n-models``, ``--eval-epochs``), the older names still work with a
warning (:func:`deprecated_alias`); ``run`` and ``sweep`` read a TOML file or a run's ``job.json``
(``--config``, :func:`apply_config`), options given on the command line winning (issue 46).
"""
from __future__ import annotations

import argparse
import functools
import logging
import signal
import sys
import threading
from pathlib import Path

from mddbench import __version__, memory
from mddbench.allocator import configure_allocator
from mddbench.api.budgets import BUDGETS
from mddbench.errors import ConfigError, MddError, Terminated, raise_terminated
from mddbench.limits import AT_LEAST_1, NON_NEGATIVE, POSITIVE, option

DEFAULT_OUT = "mddbench_out"
DESCRIPTION = ("Run, distill, evaluate, inspect and publish medical dataset distillation results. "
               "Start with: mddbench run --method random --budget smoke (generated demo data, no download).")


# ------------------------------------------------------------------------------------- commands
def cmd_list(args) -> None:
    from mddbench.api.budgets import BUDGETS
    from mddbench.registry import DATASETS, METHODS, NETWORKS

    for path in args.plugin or []:
        try:
            METHODS.load_file(path)
        except MddError as exc:  # listed with the other failures below; the rest still lists
            METHODS.failures.setdefault(str(path), str(exc))
    if args.what == "methods" and args.budget:
        _print_shares(args)
    elif args.what == "methods":
        methods = [(n, METHODS.get(n)) for n in METHODS.names(args.pattern)]
        rows = [(n, cls.label_type, getattr(cls, "summary", "")) for n, cls in methods]
        _print_rows(["method", "labels", "summary"], rows)
    elif args.what == "datasets":
        specs = [(n, DATASETS.get(n)) for n in DATASETS.names(args.pattern)]
        rows = [(n, s.title, s.source, "x".join(map(str, s.shape)), s.n_classes, "yes" if s.benchmark else "")
                for n, s in specs]
        _print_rows(["dataset", "title", "source", "input", "classes", "MDD benchmark"], rows)
    elif args.what == "networks":
        print("\n".join(NETWORKS.names(args.pattern)))
    else:
        _print_rows(["budget", "version", "eval models", "eval epochs", "real epochs", "experts", "expert epochs",
                     "iterations"],
                    [(b.name, b.version, b.eval_models, b.eval_epochs, b.real_epochs, b.experts, b.expert_epochs,
                      "each method's own" if b.share is None else f"{100 * b.share:g} % of official")
                     for b in BUDGETS.values()])
    for name, why in METHODS.failures.items():
        print(f"! plugin {name} failed to load: {why}", file=sys.stderr)


def _print_shares(args) -> None:
    from mddbench.api.budgets import get_budget
    from mddbench.api.parity import PARITY_FACTOR, shares, spread
    from mddbench.data.dataset import get_spec
    from mddbench.registry import METHODS

    budget = get_budget(args.budget)
    found = shares(get_spec(args.dataset), args.ipc, budget, METHODS.names(args.pattern))
    _print_rows(["method", "iterations", "official", "share", "unit", "also scaled at this budget"],
                [(s.method, s.iterations, s.official, f"{100 * s.share:.2f} %", s.unit, s.also) for s in found])
    print(f"\n{budget.name} (version {budget.version}) on {args.dataset} ipc {args.ipc}: largest / smallest share "
          f"{spread(found):.2f} (parity allows {PARITY_FACTOR:g})")


def cmd_info(args) -> None:
    from mddbench.data.dataset import data_root, get_spec

    spec = get_spec(args.dataset)
    root = data_root(args.data_root)
    print(f"{spec.name}: {spec.title}")
    print(f"  source       {spec.source}{'  (one of the six MDD benchmark datasets)' if spec.benchmark else ''}")
    print(f"  input        {'x'.join(map(str, spec.shape))} ({spec.dims}D), task {spec.task}")
    print(f"  classes      {spec.n_classes}: " + "; ".join(f"{i} {n}" for i, n in enumerate(spec.label_names)))
    if spec.n_samples:
        print("  splits       " + " / ".join(f"{k} {v:,}" for k, v in spec.n_samples.items()))
    else:
        print("  splits       70 / 10 / 20 stratified (seeded), sizes known once the folder is cached")
    print(f"  license      {spec.license}")
    if spec.filename:
        found = spec.locate(root)
        print(f"  file         {found} (present)" if found else f"  file         {root / spec.filename} (missing)")
    if spec.url:
        print(f"  url          {spec.url}")
    if spec.md5:
        print(f"  md5          {spec.md5}")
    print(f"  data root    {root} (set with --data-root or MDDBENCH_DATA)")
    print(f"  setup        {spec.where}")
    print(f"  cite         {spec.citation}")


def _job_options(args) -> dict:
    """The Job fields a command's options set, read in one place (run, distill, sweep, buffers); an option
    a command does not offer keeps the Job's default."""
    from mddbench.api.method import parse_overrides

    given = {"budget": args.budget, "hparams": tuple(sorted(parse_overrides(args.hp).items())),
             "plugins": tuple(getattr(args, "plugin", None) or ()), "progress": not args.quiet}
    if hasattr(args, "eval_model"):  # main() fills in the default network
        given["eval_models"] = tuple(args.eval_model)
    for name in ("eval_n_models", "eval_epochs", "time_budget", "snapshot_every", "data_root", "out",
                 "expert_cache", "device"):
        if hasattr(args, name):
            given[name] = getattr(args, name)
    return given


def _job(args, method: str, dataset: str, ipc, seed: int):
    from mddbench.run.job import Job

    return Job(method=method, dataset=dataset, ipc=ipc, seed=seed, **_job_options(args))


def cmd_run(args) -> None:
    from mddbench.run.pipeline import run_job

    job = _job(args, args.method, args.dataset, args.ipc, args.seed)
    replayed = getattr(args, "config_job_id", None)
    if replayed and replayed != job.job_id:
        print(f"note: {args.config} names job {replayed}, this command makes {job.job_id}: an option given here, or "
              f"the budget's definition (version) since, changed it", file=sys.stderr)
    stored = _stored_models(job)
    records = run_job(job)
    _print_records(records, job.data_root, already_done=bool(records) and all(r["eval_model"] in stored
                                                                               for r in records))
    print(f"run folder: {job.run_dir}\nresults:    {Path(job.out) / 'results.sqlite'}")


def _stored_models(job) -> set[str]:
    """The evaluation networks whose records of the job its store holds already (none without a store)."""
    from mddbench.results.store import ResultStore

    path = Path(job.out) / "results.sqlite"
    try:
        return {r["eval_model"] for r in ResultStore(path, create=False).records(job_id=job.job_id)} \
            if path.is_file() else set()
    except MddError:  # an unreadable store: run_job says what is wrong with it
        return set()


def cmd_distill(args) -> None:
    from mddbench.atomic import ensure_writable_file
    from mddbench.run.job import ARTIFACT
    from mddbench.run.pipeline import distill, prepare

    job = _job(args, args.method, args.dataset, args.ipc, args.seed)
    if args.save:
        ensure_writable_file(args.save, "--save")  # before the distillation, not after it
    p = prepare(job)
    if not p.method.shareable:
        raise ConfigError(f"{args.method} has no synthetic set to save (it trains on the real data); use `run`")
    synset = distill(p)
    path = job.run_dir / ARTIFACT
    if args.save:
        path = synset.save(args.save)
    print(f"synthetic set: {path} ({len(synset)} images, {synset.label_type} labels"
          f"{f', learned lr {synset.lr:.4g}' if synset.lr else ''}; distilled in {synset.meta['distill_seconds']:.1f} s)")


def cmd_eval(args) -> None:
    from mddbench.atomic import ensure_writable
    from mddbench.results.store import ResultStore
    from mddbench.run.pipeline import evaluate_saved

    if not args.no_record:
        ensure_writable(Path(args.out))  # before the evaluation, not after it
    records = evaluate_saved(args.artifact, tuple(args.eval_model or ("convnet",)), args.budget, args.seed,
                             args.eval_n_models, args.eval_epochs, args.data_root, args.out, args.device,
                             progress=not args.quiet, record=False)
    _print_records(records, args.data_root)
    if not args.no_record:
        store = ResultStore(Path(args.out) / "results.sqlite")
        added = sum(store.add_new(r) for r in records)
        print(f"recorded {added} new record(s) in {store.path}" if added else
              f"not recorded: {store.path} already holds these records (the same set, budget and seed)")


def cmd_show(args) -> None:
    from mddbench.atomic import ensure_writable_file
    from mddbench.report.show import show_synset

    if args.output:
        ensure_writable_file(args.output, "--output")
    out = show_synset(args.artifact, args.output)
    print(f"wrote {out}")


def cmd_privacy(args) -> None:
    from mddbench.atomic import ensure_writable, ensure_writable_file
    from mddbench.privacy.audit import audit_artifact, audited_images, summary_lines
    from mddbench.report.privacy_figure import nearest_figure
    from mddbench.results.privacy_store import PrivacyStore
    from mddbench.run.job import resolve_device

    if args.figure and len(args.artifacts) > 1:
        raise ConfigError("--figure names one PNG; give one set, or leave it out (figures go to OUT/privacy/)")
    device, cache = resolve_device(args.device), {}  # one `real` reference network per dataset and seed
    ensure_writable(Path(args.out) / "privacy")
    if args.figure:
        ensure_writable_file(args.figure, "--figure")  # before the audit, not after it
    store = None if args.no_record else PrivacyStore(Path(args.out) / "results.sqlite")
    for artifact in args.artifacts:
        record, synset, data = audit_artifact(
            artifact, args.data_root, args.budget, args.eval_model, args.eval_n_models, args.eval_epochs,
            args.real_epochs, args.seed,
            device, cache, None if store is None or args.again else store.has_privacy,
            None if store is None else lambda job, model: next(iter(store.records(job_id=job, eval_model=model)), None),
            store_path=Path(args.out) / "results.sqlite")
        if record is None:
            print(f"{artifact}: already audited (in {store.path}); --again to audit it anyway")
            continue
        print("\n".join(summary_lines(record)))
        name = f"{record['method']}_{record['dataset']}_ipc{record['ipc']}_s{record['seed']}_{record['id'][:8]}.png"
        figure = nearest_figure(audited_images(synset, record["seed"], device), synset.hard_labels(), data, record,
                                args.figure or Path(args.out) / "privacy" / name)
        print(f"  figure: {figure}")
        if store is not None:
            if args.again:  # the user asked for a fresh audit: it takes the place of the stored one
                stored = "replaced the audit stored under its id" if store.replace_privacy(record) else "recorded"
            else:
                stored = "recorded" if store.add_privacy(record)[1] else "already stored"
            link = record["eval_record_id"] or "none stored: the budget's evaluation recipe was attacked"
            print(f"  {stored} in {store.path} (table privacy; evaluation record: {link})")


def _checked_records(records: list[dict], source: str) -> list[dict]:
    """``records``, refused when one contradicts itself (a forged or hand-edited record is never ranked)."""
    from mddbench.results.merge import refuse_contradictions
    from mddbench.run.record import record_problems

    refuse_contradictions(records, source, record_problems, "nothing was written")
    return records


def cmd_leaderboard(args) -> None:
    from mddbench.atomic import ensure_writable
    from mddbench.registry import load_plugins
    from mddbench.report.publish import is_published_folder, publish, read_records
    from mddbench.results.failures import failures_of
    from mddbench.results.privacy_store import privacy_for_leaderboard
    from mddbench.results.store import ResultStore

    to = Path(args.to) if args.to else Path(args.results) / "leaderboards"
    if to.exists() and not to.is_dir():
        raise ConfigError(f"--to {to} is a file; name a folder for the leaderboards")
    if is_published_folder(to):
        raise ConfigError(f"{to} is the project's published leaderboard folder; `mddbench leaderboard` writes only "
                          f"your own (default: {Path(args.results) / 'leaderboards'}). Publishing is its own step: "
                          f"`mddbench publish --results {args.results}`")
    load_plugins(args.plugin)
    if args.records:
        source, records = args.records, read_records(args.records)
    else:
        store = ResultStore(Path(args.results) / "results.sqlite", create=False)
        source, records = str(store.path), store.records()
    _checked_records(records, source)
    store_path = Path(args.results) / "results.sqlite"
    ensure_writable(to, "--to")  # the records are read and valid: now the folder they go to
    paths = publish(records, to, source, privacy_for_leaderboard(store_path, args.records),
                    failures_of(args.records or store_path))
    print(f"{len(records)} records -> " + ", ".join(str(p) for p in paths))
    _print_untrusted(records)


def _print_untrusted(records: list[dict]) -> None:
    from mddbench.results.verification import MARK, untrusted

    bad = untrusted(records)
    if bad:
        print(f"{MARK} {len(bad)} record(s) were merged from other stores and are not verified here; their cells are "
              f"marked {MARK} (`mddbench verify` re-evaluates their sets)")


def cmd_publish(args) -> None:
    from mddbench.registry import load_plugins
    from mddbench.report.publish import publish_step, read_records
    from mddbench.results.failures import failures_of
    from mddbench.results.privacy_store import privacy_for_leaderboard
    from mddbench.results.store import ResultStore
    from mddbench.run.record import record_problems

    to = Path(args.to)
    if to.exists() and not to.is_dir():
        raise ConfigError(f"--to {to} is a file; name the published leaderboard folder")
    load_plugins(args.plugin)
    if args.records:  # a file's records are its claims: those it adds count as merged from it (not verified)
        source = str(Path(args.records).resolve())
        records = [r if r.get("origin") else {**r, "origin": {"merged_from": source}}
                   for r in read_records(args.records)]
        privacy, failures = privacy_for_leaderboard(Path(args.results) / "results.sqlite", args.records), \
            failures_of(args.records)
    else:
        store = ResultStore(Path(args.results) / "results.sqlite", create=False)
        source, records = str(store.path), store.records()
        privacy, failures = privacy_for_leaderboard(store.path, None), failures_of(store.path)
    paths, plan = publish_step(records, to, source, privacy, failures, args.replace or (), args.allow_unverified,
                               record_problems, args.dry_run)
    changed = ", ".join(sorted(plan.changed)) or "none"
    print(f"{len(plan.new)} new record(s) {'would be ' if args.dry_run else ''}published into {to} "
          f"({len(plan.published)} already there; published cells changed: {changed})")
    if plan.kept:
        print(f"kept the published copy of {len(plan.kept)} record(s) this store measured differently: "
              f"{', '.join(plan.kept[:5])}{', ...' if len(plan.kept) > 5 else ''}")
    if plan.untrusted:
        _print_untrusted([r for recs in plan.untrusted.values() for r in recs])
    if paths:
        print(f"wrote {len(paths)} file(s) in {to}")


def cmd_verify(args) -> int:
    from collections import Counter

    from mddbench.results.verification import FAILED
    from mddbench.run.verify import verify_store

    outcomes = verify_store(args.results, args.id or (), args.sample, args.seed, args.data_root, args.device,
                            args.tolerance, args.again, progress=not args.quiet)
    for o in outcomes:
        if o.state != "local" or args.verbose:
            print(o.line())
    counts = Counter(o.state for o in outcomes)
    print(f"{len(outcomes)} record(s): " + (", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
                                             or "nothing left to check (verified already; --again re-checks)")
          + ("" if not counts.get("local") else " (local: made in this store, trusted by construction)"))
    failed = sum(counts[s] for s in FAILED)
    if failed:
        print(f"mddbench: {failed} record(s) are not reproduced by their own sets (see above)", file=sys.stderr)
        return 1
    return 0


def cmd_web(args) -> None:
    from mddbench.atomic import ensure_writable
    from mddbench.report.publish import read_records
    from mddbench.report.web import write_web
    from mddbench.results.failures import failures_of
    from mddbench.results.privacy_store import privacy_for_leaderboard
    from mddbench.results.store import ResultStore

    if Path(args.to).exists() and not Path(args.to).is_dir():
        raise ConfigError(f"--to {args.to} is a file; name a folder for the web page")
    store_path = Path(args.results) / "results.sqlite"
    if args.records:
        records = read_records(args.records)
    else:
        records = ResultStore(store_path, create=False).records()
    sets = args.sets or (Path(args.records).parent if args.records else Path(args.results))
    ensure_writable(Path(args.to), "--to")
    paths = write_web(records, args.to, privacy_for_leaderboard(store_path, args.records),
                      failures_of(args.records or store_path), sets_root=sets)
    print(f"{len(records)} records -> {paths[0]} ({len(paths) - 1} set thumbnails; open it in a browser)")


def cmd_sweep(args) -> None:
    from mddbench.atomic import ensure_writable
    from mddbench.scaleout.sweep import expand, run_sweep

    if threading.current_thread() is threading.main_thread():
        # a sweep started with `&` in a script begins with SIGINT ignored; `kill -INT` on the driver is still a
        # request to stop: it checkpoints the jobs in flight (passed on to the workers), exits 130, a rerun resumes
        signal.signal(signal.SIGINT, signal.default_int_handler)

    kw = {k: v for k, v in _job_options(args).items() if k != "progress"}
    executor = None
    if args.executor == "ray":
        from mddbench.scaleout.ray_cluster import RayExecutor

        if args.shared_experts:
            if not args.expert_cache:
                raise ConfigError("--shared-experts needs --expert-cache DIR: the expert folder every Ray node mounts")
            kw["expert_cache"] = str(Path(args.expert_cache).expanduser().resolve())
        executor = RayExecutor(args.ray_address, args.device, args.cpus_per_job, args.gpus_per_job,
                               args.shared_experts, args.max_retries)
    elif args.ray_address or args.shared_experts:
        raise ConfigError("--ray-address and --shared-experts are options of --executor ray")
    ensure_writable(Path(args.out))  # before any job, not when the first one records
    jobs = expand(args.methods, args.datasets, args.ipc, args.seeds, **kw)
    outcomes = run_sweep(jobs, workers=args.jobs, progress=not args.quiet, executor=executor)
    failed = [o for o in outcomes if not o.ok]
    print(f"{len(jobs)} jobs: {len(outcomes) - len(failed)} ran now, {len(jobs) - len(outcomes)} were already done, "
          f"{len(failed)} failed")
    for o in failed:
        print(f"  FAILED {o.job.run_name}: {o.message.strip()}", file=sys.stderr)
    if failed:
        raise MddError(f"{len(failed)} job(s) failed; fix them and rerun the same sweep (finished jobs are skipped)")


def cmd_merge(args) -> None:
    from mddbench.registry import load_plugins
    from mddbench.results.merge import audits_of_other_files, merge_into, merge_target
    from mddbench.run.record import record_problems

    load_plugins(args.plugin)
    summary = merge_into(Path(args.into), [Path(s) for s in args.sources], check=record_problems)
    for source, added, same, differing, audited, audits_differing, failed, differ_ids in summary:
        print(f"{source}: {added} added, {same} already there"
              + (f", {differing} differ from the record already there (kept the store's: "
                 f"{', '.join(differ_ids[:5])}{', ...' if differing > 5 else ''})" if differing else "")
              + (f", {audited} privacy result(s) added" if audited else "")
              + (f", {audits_differing} privacy result(s) differ from the audit already there under their id "
                 f"(kept the store's)" if audits_differing else "")
              + (f", {failed} failure(s) added" if failed else ""))
    total, audits, failures = (sum(s[i] for s in summary) for i in (1, 4, 6))
    parts = [f"{total} record(s)"] + [f"{n} {what}" for n, what in ((audits, "privacy result(s)"),
                                                                   (failures, "failure(s)")) if n]
    print(f"{', '.join(parts[:-1])} and {parts[-1]}" if len(parts) > 1 else parts[0],
          f"added to {merge_target(args.into)}")
    for audit, record in audits_of_other_files(args.into):
        print(f"note: privacy result {audit['id']} ({audit['method']}, {audit['dataset']}, ipc {audit['ipc']}, "
              f"seed {audit['seed']}) audited another file than its evaluation record {record['id']} names "
              f"(a rerun of the job): its figures are that rerun's set's, which another machine may have made "
              f"differently")


def cmd_curve(args) -> None:
    from mddbench.data.dataset import load_dataset
    from mddbench.evaluation.protocol import EvalConfig, evaluate
    from mddbench.report.figures import accuracy_curve, read_run_json
    from mddbench.run.job import resolve_device

    job = read_run_json(Path(args.run) / "job.json", "give a run folder made by `mddbench run` or `distill` "
                        "(rerunning that command with its artifact deleted writes job.json again)")
    data = load_dataset(job["dataset"], args.data_root or job.get("data_root"))
    cfg = EvalConfig(n_models=args.eval_n_models, epochs=args.eval_epochs)
    device = resolve_device(args.device)
    settings = {"eval_n_models": cfg.n_models, "eval_epochs": cfg.epochs}
    points = accuracy_curve(Path(args.run), lambda s: evaluate(s, data, cfg, seed=job.get("seed", 0), device=device,
                                                              progress=False),
                            points=args.points, settings=settings, progress=not args.quiet)
    for p in points:
        print(f"it {p['iteration']:>6}  {p['seconds']:>8.1f} s  test {100 * p['test_acc']:.2f} %  "
              f"bal {100 * p['balanced_acc']:.2f} %  val {100 * p['val_acc']:.2f} %  "
              f"val bal {100 * p['val_balanced_acc']:.2f} %")
    print(f"wrote {Path(args.run) / 'curve.json'}")


def cmd_plot(args) -> None:
    from mddbench.atomic import ensure_writable
    from mddbench.report.figures import plot_runs

    ensure_writable(Path(args.to), "--to")
    for path in plot_runs([Path(r) for r in args.runs], Path(args.to)):
        print(f"wrote {path}")


def cmd_buffers(args) -> None:
    from mddbench.run.pipeline import build_experts
    from mddbench.trajectory.experts import mean_expert_accuracy

    for provider, recipe, traj in build_experts(_job(args, args.method, args.dataset, args.ipc, 0)):
        print(f"{len(traj)} experts x {traj.epochs} epochs in {provider.folder(recipe)} "
              f"(mean expert test accuracy {100 * mean_expert_accuracy(traj.meta):.2f} %)")
        if args.report:
            from mddbench.trajectory.expert_quality import report_rows, snapshot_scores

            data = provider.data
            counts = data.y["val"].bincount(minlength=data.spec.n_classes)
            print(f"\nval split: {len(data.y['val'])} images, majority class {100 * counts.max() / counts.sum():.1f} %; "
                  f"a majority-class predictor scores {100 / data.spec.n_classes:.1f} % balanced accuracy")
            _print_rows(["epoch", "val acc", "val bal acc (mean)", "min", "max", "most predicted class"],
                        report_rows(snapshot_scores(traj, data, recipe.for_budget(provider.budget), provider.device)))


# ------------------------------------------------------------------------------------ helpers
def _print_rows(header, rows) -> None:
    from tabulate import tabulate

    print(tabulate(rows, headers=header, tablefmt="simple"))


def _print_records(records, data_root: str | None = None, already_done: bool = False) -> None:
    from mddbench.data.class_balance import counts_of_test_split
    from mddbench.report.printout import printout

    print(printout(records, functools.cache(lambda dataset: counts_of_test_split(dataset, data_root)), already_done))


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the text already says it or there is none to say
    (None, a switch's False): ``--help`` shows what leaving an option out means."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text or default is None or default is False or default == argparse.SUPPRESS
                or (not action.option_strings and action.nargs not in ("?", "*"))):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


def deprecated_alias(p: argparse.ArgumentParser, old: str, new: str) -> None:
    """``old`` still does what ``new`` does (hidden from --help) and says once per command line that its name
    is ``new`` now: one name per concept in every command (issue 46), without breaking scripts."""
    target = next(a for a in p._actions if new in a.option_strings)

    class Alias(type(target)):
        silent = False  # set on the parser that only finds which options were given (apply_config)

        def __call__(self, parser, namespace, values, option_string=None):
            if not self.silent and not getattr(self, "said", False):
                self.said = True
                print(f"mddbench: warning: {old} is deprecated, use {new} (the same option, one name in every "
                      f"command)", file=sys.stderr)
            super().__call__(parser, namespace, values, option_string)

    kw = {"nargs": target.nargs} if target.nargs is not None else {}
    p.add_argument(old, action=Alias, dest=target.dest, type=target.type, metavar=target.metavar,
                   default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kw)


def _seed(text: str) -> int:
    """An argparse ``type`` for a seed: an integer from 0 to 2**63 - 1 (what every seed stream takes)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to {2**63 - 1}, got {value}")
    return value


def _common(p: argparse.ArgumentParser, experts: bool = True, plugins: bool = True,
            budget_default: str = "quick") -> None:
    """The options a command shares; ``experts``/``plugins``: only where the command uses them."""
    p.add_argument("--data-root", metavar="DIR",
                   help="folder holding dataset files (default: $MDDBENCH_DATA or ~/.mddbench/data)")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help="results, runs and expert cache")
    if experts:
        p.add_argument("--expert-cache", metavar="DIR",
                       help="expert trajectories folder shared by several --out folders "
                            "(default: $MDDBENCH_EXPERTS, else OUT/experts)")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda[:N]")
    p.add_argument("--budget", default="quick", help=f"{' | '.join(BUDGETS)} (default: {budget_default})")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--memory-budget", type=option(float, POSITIVE), metavar="MIB",
                   help="activation memory one training or inference pass may hold; larger batches run as "
                        "micro-batches with the same update (default: $MDDBENCH_MEMORY_BUDGET, else automatic: "
                        "a quarter of free GPU memory, or an eighth of available memory up to 1024 MiB on a CPU)")
    if plugins:
        p.add_argument("--plugin", action="append", metavar="FILE.py", help="load a method plugin file (repeatable)")


def _eval_opts(p: argparse.ArgumentParser, many: bool = True, default_size: str = "the budget's") -> None:
    """The evaluation options, one name each in run, sweep, eval and privacy (``many``: --eval-model repeatable)."""
    if many:
        p.add_argument("--eval-model", action="append", default=None, metavar="NET",
                       help="evaluation network, repeatable: convnet, lenet, alexnet, resnet18, ... "
                            "(default: convnet)")
    else:
        p.add_argument("--eval-model", default="convnet", metavar="NET",
                       help="network trained on the set, attacked and used for the embedding")
    p.add_argument("--eval-n-models", type=option(int, AT_LEAST_1), metavar="N",
                   help=f"evaluation networks trained on the set (default: {default_size} eval models)")
    p.add_argument("--eval-epochs", type=option(int, AT_LEAST_1), metavar="N",
                   help=f"epochs of each evaluation network (default: {default_size} eval epochs)")


def _run_opts(p: argparse.ArgumentParser, sweep: bool = False, save: bool = False, evaluate: bool = True) -> None:
    """A job's options (run, distill, sweep); ``evaluate``: the command evaluates (distill does not)."""
    if not sweep:  # --method is required: checked after --config (parse_command)
        p.add_argument("--method", help="the method to run (mddbench list methods); required"
                                        + ("" if save else " unless --config names it"))
        p.add_argument("--dataset", default="demo", help="dataset name (mddbench list datasets); demo is generated, "
                                                         "offline")
        p.add_argument("--ipc", type=int, default=2, help="images per class (ignored by the real baseline)")
        p.add_argument("--seed", type=int, default=0, help="seed of the distillation and the evaluation")
    if not save:
        p.add_argument("--config", metavar="FILE",
                       help="read the options from a TOML file (keys: the long options, with _ or -) or a run "
                            "folder's job.json; options given on the command line win (default: none)")
    p.add_argument("--hp", action="append", metavar="KEY=VALUE", help="override a method hyperparameter (repeatable)")
    if evaluate:
        _eval_opts(p)
    p.add_argument("--time-budget", type=option(float, POSITIVE), metavar="SECONDS",
                   help="stop distilling after this many seconds (default: no limit)")
    p.add_argument("--snapshot-every", type=option(int, NON_NEGATIVE), default=0, metavar="N",
                   help="save the synthetic set every N iterations, for accuracy-vs-time curves (0: never)")
    if save:
        p.add_argument("--save", metavar="PATH",
                       help="also save the synthetic set to this path (default: only in the run folder)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mddbench", description=DESCRIPTION, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"mddbench {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks and debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=functools.partial(argparse.ArgumentParser, formatter_class=HelpFormatter))

    p = sub.add_parser("list", help="list methods, datasets, networks or budgets")
    p.add_argument("what", nargs="?", default="methods", choices=["methods", "datasets", "networks", "budgets"],
                   help="what to list")
    p.add_argument("--pattern", default="*", help="glob filter, e.g. 'organ*'")
    p.add_argument("--plugin", action="append", metavar="FILE.py", help="load a method plugin file (repeatable)")
    p.add_argument("--budget", help="methods: each one's iterations at this budget against its official ones "
                                    "(default: not shown)")
    p.add_argument("--dataset", default="breastmnist", help="with --budget: the dataset")
    p.add_argument("--ipc", type=option(int, AT_LEAST_1), default=2, help="with --budget: images per class")
    p.set_defaults(fn=cmd_list)

    p = sub.add_parser("info", help="a dataset's classes, splits, license and where its file goes")
    p.add_argument("dataset", help="dataset name (mddbench list datasets)")
    p.add_argument("--data-root", metavar="DIR",
                   help="folder holding dataset files (default: $MDDBENCH_DATA or ~/.mddbench/data)")
    p.set_defaults(fn=cmd_info)

    for name, fn, text in (("run", cmd_run, "distill, evaluate and record one job"),
                           ("distill", cmd_distill, "distill and save a synthetic set, without evaluating")):
        p = sub.add_parser(name, help=text)
        _run_opts(p, save=name == "distill", evaluate=name == "run")
        _common(p)
        p.set_defaults(fn=fn)

    p = sub.add_parser("eval", help="evaluate a saved synthetic set (protocol v1)")
    p.add_argument("artifact", help="a .safetensors synthetic set or a run folder")
    _eval_opts(p)
    deprecated_alias(p, "--model", "--eval-model")
    p.add_argument("--seed", type=_seed, default=None, help="evaluation seed (default: the set's own)")
    p.add_argument("--no-record", action="store_true", help="print only; do not add records to the store")
    _common(p, experts=False, plugins=False, budget_default="the set's own")
    p.set_defaults(fn=cmd_eval, budget=None)

    p = sub.add_parser("show", help="write a PNG grid of a synthetic set's images per class")
    p.add_argument("artifact", help="a .safetensors synthetic set or a run folder")
    p.add_argument("--output", "-o", metavar="PNG", help="PNG path (default: beside the artifact)")
    p.set_defaults(fn=cmd_show)

    p = sub.add_parser("privacy", help="privacy audit of saved sets: near copies of patients, membership inference")
    p.add_argument("artifacts", nargs="+", metavar="SET", help=".safetensors synthetic set(s) or run folder(s)")
    _eval_opts(p, many=False)
    for old, new in (("--model", "--eval-model"), ("--n-models", "--eval-n-models"), ("--epochs", "--eval-epochs")):
        deprecated_alias(p, old, new)
    p.add_argument("--seed", type=_seed, default=None, help="audit seed (default: the set's own)")
    p.add_argument("--real-epochs", type=option(int, AT_LEAST_1), metavar="N",
                   help="epochs of the real reference network (default: the budget's real epochs)")
    p.add_argument("--figure", metavar="PNG", help="PNG path of the nearest-image figure (default: OUT/privacy/...)")
    p.add_argument("--no-record", action="store_true", help="print only; do not store the results")
    p.add_argument("--again", action="store_true",
                   help="audit even when the same audit is already stored, and store the new audit in its place "
                        "in OUT's store (e.g. to add a measurement made since; mddbench merge into a store that "
                        "holds it already keeps that store's)")
    _common(p, experts=False, plugins=False, budget_default="the set's own")
    p.set_defaults(fn=cmd_privacy, budget=None)

    p = sub.add_parser("leaderboard", help="render leaderboards (CSV + markdown) from the results store, into "
                                           "your own folder")
    p.add_argument("--results", default=DEFAULT_OUT, help=f"folder holding results.sqlite (default: {DEFAULT_OUT})")
    p.add_argument("--records", help="a records.jsonl export to render instead of the store")
    p.add_argument("--to", help="output folder (default: RESULTS/leaderboards; never the published leaderboards/: "
                                "that is mddbench publish)")
    p.add_argument("--plugin", action="append", metavar="FILE.py", help="load a method plugin file (repeatable)")
    p.set_defaults(fn=cmd_leaderboard)

    p = sub.add_parser("web", help="render the leaderboards as one static web page (index.html + thumbs/)")
    p.add_argument("--results", default=DEFAULT_OUT, help=f"folder holding results.sqlite (default: {DEFAULT_OUT})")
    p.add_argument("--records", help="a records.jsonl export to render instead of the store (its privacy.jsonl and "
                                     "failures.jsonl beside it are read too)")
    p.add_argument("--sets", help="the folder the records' set paths (artifact) start from, for the thumbnails "
                                  "(default: the --results folder, or the folder of --records)")
    p.add_argument("--to", default=f"{DEFAULT_OUT}/web", help=f"output folder (default: {DEFAULT_OUT}/web)")
    p.set_defaults(fn=cmd_web)

    p = sub.add_parser("publish", help="add the store's records to the published leaderboards/ (explicit; refuses to "
                                       "change a published cell or publish unverified records unless told to)")
    p.add_argument("--results", default=DEFAULT_OUT, help=f"folder holding results.sqlite (default: {DEFAULT_OUT})")
    p.add_argument("--records", help="a records.jsonl to publish instead of the store (records it adds count as "
                                     "unverified; --records leaderboards/records.jsonl re-renders the published "
                                     "tables)")
    p.add_argument("--to", default="leaderboards", help="the published folder (default: leaderboards)")
    p.add_argument("--replace", action="append", metavar="CELL",
                   help="allow changing this published cell (repeatable; the refusal names the cells, "
                        "budget/protocol/dataset/ipc/network/row)")
    p.add_argument("--allow-unverified", action="store_true",
                   help="publish records merged from other stores that mddbench verify has not verified "
                        "(their cells are marked)")
    p.add_argument("--dry-run", action="store_true", help="say what would be published; write nothing")
    p.add_argument("--plugin", action="append", metavar="FILE.py", help="load a method plugin file (repeatable)")
    p.set_defaults(fn=cmd_publish)

    p = sub.add_parser("verify", help="re-evaluate merged records' sets: verified only when the set is present, "
                                      "its sha256 matches and its numbers reproduce (exit 1 on a mismatch)")
    p.add_argument("--results", default=DEFAULT_OUT, help=f"folder holding results.sqlite (default: {DEFAULT_OUT})")
    p.add_argument("--id", action="append", metavar="ID", help="verify this record (repeatable; default: all)")
    p.add_argument("--sample", type=option(int, AT_LEAST_1), metavar="N", help="verify a seeded sample of N records")
    p.add_argument("--seed", type=option(int, NON_NEGATIVE), default=0, help="the sample's seed")
    p.add_argument("--tolerance", type=option(float, NON_NEGATIVE), default=1e-6,
                   help="largest difference of a per-model value (a fraction) that still reproduces")
    p.add_argument("--again", action="store_true", help="re-check records already verified")
    p.add_argument("--data-root", help="folder holding dataset files (default: $MDDBENCH_DATA or ~/.mddbench/data)")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda[:N]")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd_verify)

    p = sub.add_parser("sweep", help="run a grid of jobs (skips finished ones; safe to kill and restart)")
    p.add_argument("--methods", nargs="+", help="methods to run (required unless --config names them)")
    p.add_argument("--datasets", nargs="+", help="datasets to run them on (required unless --config names them)")
    p.add_argument("--ipc", nargs="+", type=option(int, AT_LEAST_1), default=[1, 2, 10], help="images per class")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds")
    p.add_argument("--jobs", type=option(int, AT_LEAST_1), default=1,
                   help="local worker processes (each gets cores/jobs threads, or OMP_NUM_THREADS when set, and, "
                        "with several GPUs, its own GPU)")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local worker processes or Ray tasks on a cluster (pip install -e '.[ray]')")
    p.add_argument("--ray-address", metavar="HOST:PORT",
                   help="(ray) the cluster that ray start --head printed (default: start Ray on this machine)")
    p.add_argument("--cpus-per-job", type=option(float, POSITIVE), default=1, help="(ray) CPUs each task declares")
    p.add_argument("--gpus-per-job", type=option(float, NON_NEGATIVE),
                   help="(ray) GPUs each task declares (default: 1 when the cluster has GPUs and --device is not cpu)")
    p.add_argument("--max-retries", type=option(int, NON_NEGATIVE), default=3,
                   help="(ray) retries of a task whose worker died")
    p.add_argument("--shared-experts", action="store_true",
                   help="(ray) --expert-cache is a folder every node mounts: build and read experts there "
                        "instead of shipping them through Ray")
    _run_opts(p, sweep=True)
    _common(p)
    p.set_defaults(fn=cmd_sweep)

    p = sub.add_parser("merge", help="add the records of other stores or records.jsonl files to one store")
    p.add_argument("sources", nargs="+", metavar="SRC",
                   help="results.sqlite files, folders holding one, or .jsonl exports")
    p.add_argument("--into", default=DEFAULT_OUT, help=f"the store (a folder or .sqlite file; default: {DEFAULT_OUT})")
    p.add_argument("--plugin", action="append", metavar="FILE.py",
                   help="load a method plugin file (repeatable): its records name a method this installation must know")
    p.set_defaults(fn=cmd_merge)

    p = sub.add_parser("curve", help="evaluate a run's snapshots: accuracy against distillation time")
    p.add_argument("run", help="a run folder made with --snapshot-every N")
    p.add_argument("--eval-n-models", type=option(int, AT_LEAST_1), default=3, metavar="N",
                   help="evaluation networks per snapshot")
    p.add_argument("--eval-epochs", type=option(int, AT_LEAST_1), default=300, metavar="N",
                   help="epochs of each evaluation network")
    p.add_argument("--points", type=option(int, AT_LEAST_1),
                   help="evaluate at most N snapshots, evenly spaced, the last always (default: every snapshot)")
    p.add_argument("--data-root", metavar="DIR", help="folder holding dataset files (default: the run's own)")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda[:N]")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd_curve)

    p = sub.add_parser("plot", help="figures from run folders (accuracy/time, memory/stage, loss, MMD)")
    p.add_argument("runs", nargs="+", help="run folders")
    p.add_argument("--to", default="figures", help="output folder (default: figures)")
    p.set_defaults(fn=cmd_plot)

    p = sub.add_parser("buffers", help="train (or find cached) the expert trajectories a method reads")
    p.add_argument("--dataset", required=True, help="dataset name (mddbench list datasets)")
    p.add_argument("--method", default="mtt", help="build the buffers this method reads at --budget (default: mtt; "
                                                   "ftd/ptm: flat experts)")
    p.add_argument("--ipc", type=option(int, AT_LEAST_1), default=2,
                   help="the ipc whose settings the method would use")
    p.add_argument("--hp", action="append", metavar="KEY=VALUE",
                   help="a method hyperparameter, as for run (e.g. experts=flat)")
    p.add_argument("--report", action="store_true",
                   help="print every expert epoch's val accuracy and balanced accuracy (mean, min, max over experts)")
    _common(p)
    p.set_defaults(fn=cmd_buffers)

    for action in sub._choices_actions:  # each command's --help starts with what it does
        sub.choices[action.dest].description = sub.choices[action.dest].description or action.help
    return parser


def main(argv: list[str] | None = None) -> int:
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, raise_terminated) if on_main_thread else None
    try:
        return _main(argv)
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


# ------------------------------------------------------------------------------- config files
REQUIRED = {"run": ("--method",), "distill": ("--method",), "sweep": ("--methods", "--datasets")}
JOB_FIELDS = {"eval_models": "eval_model", "hparams": "hp", "plugins": "plugin"}  # job.json's names of options


def parse_command(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line as the command reads it: ``--config``'s file first, the options given here over it."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "config", None):
        args = apply_config(parser, args, argv)
    missing = [opt for opt in REQUIRED.get(args.command, ()) if getattr(args, opt[2:].replace("-", "_")) is None]
    if missing:
        _subparser(parser, args.command).error(f"the following arguments are required: {', '.join(missing)}")
    if getattr(args, "eval_model", "unset") is None:
        args.eval_model = ["convnet"]
    return args


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    return parser._subparsers._group_actions[0].choices[command]


def _options(sub: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """A command's options a config file may set, by destination (the deprecated names and --config excluded)."""
    return {a.dest: a for a in sub._actions
            if a.option_strings and a.help != argparse.SUPPRESS and a.dest not in ("help", "config")}


def apply_config(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str]) -> argparse.Namespace:
    """``args`` with the options of ``args.config`` (TOML, or a run's job.json) wherever the command line gave none.

    The file's values become command-line tokens parsed by the same parser, so they are checked exactly as
    typed options are; an option given on the command line replaces the file's (``--hp`` per key)."""
    from mddbench.run.config import read_config

    values = read_config(args.config)
    tokens, job_id = config_tokens(_subparser(parser, args.command), values, args.config)
    merged = parser.parse_args([args.command, *tokens])
    for dest in _given(argv, args.command):
        if dest == "hp" and merged.hp:
            keys = {item.split("=", 1)[0].strip() for item in args.hp}
            merged.hp = [item for item in merged.hp if item.split("=", 1)[0].strip() not in keys] + args.hp
        else:
            setattr(merged, dest, getattr(args, dest))
    merged.verbose, merged.config, merged.config_job_id = args.verbose, args.config, job_id
    return merged


def _given(argv: list[str], command: str) -> set[str]:
    """The destinations of the options ``argv`` gives (parsed with every default suppressed)."""
    parser = build_parser()
    for action in _subparser(parser, command)._actions:
        action.default = argparse.SUPPRESS
        action.silent = True  # a deprecated name warned in the first parse already
    return set(vars(parser.parse_args(argv))) - {"fn", "command", "verbose", "config"}


def config_tokens(sub: argparse.ArgumentParser, values: dict, source: str) -> tuple[list[str], str | None]:
    """Command-line tokens for a config file's ``values`` (keys: long options with _ or -, or job.json's fields),
    and the job id the file names (job.json); an unknown key or a value an option refuses is a ConfigError."""
    options = _options(sub)
    aliases = {k: v for k, v in JOB_FIELDS.items() if v in options}
    if "quiet" in options:
        aliases["progress"] = "quiet"
    tokens, job_id = [], None
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name == "job_id" and "method" in options:
            job_id = str(value)
            continue
        dest = aliases.get(name, name)
        if dest not in options:
            raise ConfigError(f"{source}: unknown key {key!r}; valid keys: {', '.join(sorted([*options, *aliases]))}"
                              + (", job_id" if "method" in options else ""))
        if name == "progress" and isinstance(value, bool):
            value = not value
        if value is not None:
            tokens += _tokens(options[dest], value, key, source)
    return tokens, job_id


def _tokens(action: argparse.Action, value, key: str, source: str) -> list[str]:
    """The tokens that set ``action`` to a config file's ``value``, each item checked as the option checks it."""
    flag = max(action.option_strings, key=len)
    if action.nargs == 0:  # a switch
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {key} is a switch: true or false, got {value!r}")
        return [flag] if value != action.default else []
    if action.dest == "hp" and isinstance(value, dict):  # a [hp] table
        value = [f"{k}={_text(v)}" for k, v in value.items()]
    if action.dest == "hp" and isinstance(value, list):  # job.json's [[key, value], ...]
        value = [f"{v[0]}={_text(v[1])}" if isinstance(v, list) and len(v) == 2 else v for v in value]
    many = action.nargs in ("+", "*") or isinstance(action, argparse._AppendAction)
    if isinstance(value, (list, tuple)) and not many:
        raise ConfigError(f"{source}: {key} takes one value, got the list {value!r}")
    items = [_text(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
    for item in items:
        try:
            parsed = action.type(item) if action.type else item
        except (argparse.ArgumentTypeError, ValueError) as exc:
            raise ConfigError(f"{source}: {key} = {item}: {exc or 'not a valid value'}") from None
        if action.choices is not None and parsed not in action.choices:
            raise ConfigError(f"{source}: {key} = {item}: choose from {', '.join(map(str, action.choices))}")
    if action.nargs in ("+", "*"):
        return [flag, *items] if items else []
    return [f"{flag}={item}" for item in items]


def _text(value) -> str:
    """A config value as it would be typed (TOML's true is true, not Python's True)."""
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _main(argv: list[str] | None) -> int:
    configure_allocator()
    try:
        args = parse_command(argv)
    except MddError as exc:  # the config file: a bad key or value
        print(f"mddbench: error: {exc}", file=sys.stderr)
        return 2
    memory.set_budget(getattr(args, "memory_budget", None))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(message)s")
    try:
        code = args.fn(args)  # a command returns a code of its own only where it documents one (verify: 1)
    except MddError as exc:
        if args.verbose:
            raise
        print(f"mddbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        how = "stopped by SIGTERM" if isinstance(exc, Terminated) else "interrupted"
        print(f"\nmddbench: {how}; run the same command again to resume from the last checkpoint", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
