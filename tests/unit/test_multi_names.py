"""``celeriac multi``'s node names, per-node options and command lines, as Celery's
multi makes them; and the program's options after the command name."""

from __future__ import annotations

import signal
import socket
import sys
from typing import Any

import click
import pytest
from click.testing import CliRunner

from celeriac.cli.main import cli
from celeriac.cli.multi import MultiTool, build_nodes, expand, parse_args

HOST = socket.gethostname()


def worker_options() -> Any:
    """What the real worker command says about its options."""
    known: dict[str, bool] = {}
    for param in cli.commands["worker"].params:
        if isinstance(param, click.Option):
            for opt in param.opts + param.secondary_opts:
                known[opt] = not param.is_flag
    return known.get


def nodes(*argv: str, defaults: dict[str, Any] | None = None) -> list[Any]:
    return build_nodes(parse_args(argv, worker_options()), defaults)


def options_of(node: Any) -> dict[str, Any]:
    return dict(node.options)


def test_a_number_names_that_many_nodes_with_the_range_prefix() -> None:
    assert [n.name for n in nodes("3")] == [f"celery{i}@{HOST}" for i in (1, 2, 3)]
    assert [n.name for n in nodes("2", "--range-prefix=worker")] == [
        f"worker1@{HOST}", f"worker2@{HOST}"]


def test_names_are_taken_as_given_with_the_host_or_prefix_added() -> None:
    assert [n.name for n in nodes("w1", "w2")] == [f"w1@{HOST}", f"w2@{HOST}"]
    assert [n.name for n in nodes("a@%h", "b@box.example.com")] == [
        f"a@{HOST}", "b@box.example.com"]
    assert [n.name for n in nodes("2", "--hostname=worker.example.com")] == [
        "celery1@worker.example.com", "celery2@worker.example.com"]
    assert [n.name for n in nodes("w1", "-n", "box")] == ["w1@box"]
    assert [n.name for n in nodes("img", "vid", "--prefix=x-")] == [
        f"x-img@{HOST}", f"x-vid@{HOST}"]
    assert [n.name for n in nodes("w1", "--suffix=''")] == ["w1"]


def test_options_for_every_node_and_for_some() -> None:
    three = nodes("3", "-c", "3", "-c:1", "10")
    assert [options_of(n)["-c"] for n in three] == ["10", "3", "3"]
    named = nodes("image", "video", "data", "-c", "3", "-c:image", "10")
    assert [options_of(n)["-c"] for n in named] == ["10", "3", "3"]
    five = nodes("5", "-c", "3", "-c:1-3", "10", "-Q:4,5", "data", "-Q", "default")
    assert [options_of(n)["-c"] for n in five] == ["10", "10", "10", "3", "3"]
    assert [options_of(n)["-Q"] for n in five] == ["default"] * 3 + ["data"] * 2
    listed = nodes("foo", "bar", "baz", "-c", "3", "-c:foo,bar", "10", "-c:3", "7")
    assert [options_of(n)["-c"] for n in listed] == ["10", "10", "7"]
    full = nodes("w1", "w2", f"--concurrency:w2@{HOST}=4")
    assert "--concurrency" not in options_of(full[0])
    assert options_of(full[1])["--concurrency"] == "4"


def test_a_node_index_that_does_not_exist_is_a_clear_error() -> None:
    with pytest.raises(click.UsageError, match="no node at index 3"):
        nodes("a", "b", "-c:3", "4")
    with pytest.raises(click.UsageError, match="start at 1"):
        nodes("a", "b", "-c:0", "4")


def test_pidfile_and_logfile_defaults_and_expansion() -> None:
    node = nodes("w1")[0]
    assert options_of(node)["--pidfile"] == "%n.pid"
    assert options_of(node)["--logfile"] == "%n%I.log"
    assert node.pidfile == "w1.pid" and node.logfile == "w1.log"
    assert node.argv[-4:] == ["-n", f"w1@{HOST}", "--pidfile=w1.pid", "--logfile=w1%I.log"]
    given = nodes("w1", "--pidfile=/run/%n/%h.pid", "-f", "/log/%n-%d%i.log",
                  "--workdir=/srv")[0]
    domain = HOST.partition(".")[2]
    assert given.pidfile == f"/run/w1/{HOST}.pid"
    assert f"--logfile=/log/w1-{domain}%i.log" in given.argv  # %i: for the worker
    relative = nodes("w1", "--workdir=/srv/%n")[0]
    assert relative.pidfile == "/srv/w1/w1.pid"  # found where the worker writes it


def test_expand_knows_n_h_d_p_i_and_leaves_unknown_letters() -> None:
    name = "w1@box.example.com"
    assert expand("%n|%h|%d|%p|%i|%I|%%|%z", name) == \
        "w1|box.example.com|example.com|w1@box.example.com|0||%|%z"
    assert expand("%n%I.log %%", name, keep=("i", "I", "%")) == "w1%I.log %%"


def test_the_command_line_of_a_node() -> None:
    node = nodes("w1", "-A", "proj", "-l", "info", "--autoscale=50,5", "-P", "eventlet",
                 "-c", "1000", "-E", "--unknown-flag", "--weird=1", "--", "x=1")[0]
    assert node.argv == [
        "-m", "celeriac", "-A", "proj", "worker", "--detach", "-n", f"w1@{HOST}",
        "--pidfile=w1.pid", "--logfile=w1%I.log", "-l", "info", "--autoscale=50,5",
        "-P", "eventlet", "-c", "1000", "-E", "--unknown-flag", "--weird=1", "--", "x=1"]
    assert node.argv_with_executable[0] == sys.executable
    assert nodes("w1", "--executable=/opt/py")[0].argv_with_executable[0] == "/opt/py"


def test_known_options_take_a_spaced_value_and_flags_do_not() -> None:
    node = nodes("w1", "--logfile", "/tmp/x.log", "-E", "w2")
    # -E is a flag of the worker: w2 is a second node, not its value
    assert [n.name for n in node] == [f"w1@{HOST}", f"w2@{HOST}"]
    assert node[0].logfile == "/tmp/x.log"
    # an unknown short option takes the next word, as in Celery
    assert options_of(nodes("w1", "-Z", "zed")[0])["-Z"] == "zed"


def test_program_options_go_before_worker_and_the_earlier_ones_are_defaults() -> None:
    node = nodes("w1", "-b", "redis://h/0", "--result-backend=redis://h/1", "--workdir=/srv",
                 defaults={"--app": "proj", "--config": "settings"})[0]
    at = node.argv.index("worker")
    assert node.argv[:at] == ["-m", "celeriac", "--app=proj", "--config=settings",
                              "-b", "redis://h/0", "--result-backend=redis://h/1",
                              "--workdir=/srv"]
    per_node = nodes("w1", "w2", "-A", "proj", "-A:w2", "other")
    assert [n.argv[2:4] for n in per_node] == [["-A", "proj"], ["-A", "other"]]


def test_a_signal_argument_is_read_and_not_passed_on() -> None:
    parsed = parse_args(["w1", "-KILL"])
    assert parsed.signal == signal.SIGKILL and not parsed.options
    assert parse_args(["w1", "-9"]).signal == 9
    assert parse_args(["w1", "-SIGINT", "-l", "info"]).signal == signal.SIGINT
    assert parse_args(["w1", "-l", "info"]).signal is None


def run(*argv: str) -> tuple[int, str, str]:
    import io

    out, err = io.StringIO(), io.StringIO()
    code = MultiTool(takes_value=worker_options(), stdout=out, stderr=err).run(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_show_names_get_expand_help_and_bad_commands() -> None:
    code, out, _ = run("names", "2")
    assert (code, out) == (0, f"celery1@{HOST}\ncelery2@{HOST}\n")
    code, out, _ = run("show", "w1", "--logfile=/my logs/%n.log")
    assert code == 0 and "'--logfile=/my logs/w1.log'" in out  # quoted: copy-pasteable
    code, out, _ = run("get", f"w2@{HOST}", "w1", "w2", "-c", "2")
    assert code == 0 and out.startswith("-m celeriac worker --detach -n w2@")
    assert run("get", "nobody@nowhere", "w1")[0] == 1
    assert run("expand", "%n.pid", "w1", "w2")[1] == "w1.pid\nw2.pid\n"
    for asked in ("help", "--help", "-h"):
        code, out, _ = run(asked)
        assert code == 0 and "usage:" in out and "stopwait" in out
    code, _, err = run("frobnicate", "w1")
    assert code == 1 and "Invalid command: frobnicate" in err
    assert run()[0] == 1


def test_stop_and_kill_say_down_for_nodes_without_a_pidfile(tmp_path: Any) -> None:
    for command in ("stop", "stopwait", "kill"):
        code, out, _ = run(command, "w1", f"--pidfile={tmp_path}/%n.pid")
        assert code == 0
        if command != "kill":
            assert f"> w1@{HOST}: DOWN" in out


def test_multi_takes_the_program_options_given_before_it() -> None:
    done = CliRunner().invoke(cli, ["-A", "proj", "--workdir", "/srv", "multi", "show", "w1",
                                    "-b", "redis://h/0"], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    words = done.output.split()  # -b after the names moved in front of multi too
    assert words[1:8] == ["-m", "celeriac", "--app=proj", "--broker=redis://h/0",
                          "--workdir=/srv", "worker", "--detach"]


# -- the program's options after the command name -------------------------------------
def reordered(*args: str) -> list[str]:
    group = cli
    with click.Context(group) as ctx:
        return group._own_options_first(ctx, list(args))  # type: ignore[attr-defined]


def test_program_options_after_the_command_move_in_front_of_it() -> None:
    assert reordered("worker", "-A", "proj", "-l", "info") == \
        ["-A", "proj", "worker", "-l", "info"]
    assert reordered("worker", "--app=proj", "-bredis://h/0", "--workdir", "/srv", "-c", "2") \
        == ["--app=proj", "-bredis://h/0", "--workdir", "/srv", "worker", "-c", "2"]
    assert reordered("-A", "one", "beat", "--config", "cfg", "--result-backend", "x") == \
        ["-A", "one", "--config", "cfg", "--result-backend", "x", "beat"]


def test_values_of_the_command_options_and_raw_commands_are_left_alone() -> None:
    # "-A" here is the value of -Q (a queue named -A, however odd), not the app
    assert reordered("worker", "-Q", "-A", "-l", "info") == ["worker", "-Q", "-A", "-l", "info"]
    assert reordered("call", "proj.add", "-a", "[1]", "--", "-A", "x") == \
        ["call", "proj.add", "-a", "[1]", "--", "-A", "x"]
    # after a command that keeps unknown options, whole words only: -A:w1 is multi's
    assert reordered("multi", "start", "w1", "-A", "proj", "-A:w1", "x", "-Ax") == \
        ["-A", "proj", "multi", "start", "w1", "-A:w1", "x", "-Ax"]
    assert reordered("inspect", "ping", "--app=proj", "-t", "1") == \
        ["--app=proj", "inspect", "ping", "-t", "1"]


def test_worker_dash_a_after_the_command_reaches_the_app(tmp_path: Any,
                                                         monkeypatch: Any) -> None:
    (tmp_path / "orderproj.py").write_text(
        "from celeriac import Celery\n"
        "app = Celery('orderproj', broker='memory://', backend='memory://')\n"
        "app.conf.task_default_queue = 'order-q'\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    done = CliRunner().invoke(cli, ["report", "-A", "orderproj"], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    assert "app      -> orderproj" in done.output
    assert "task_default_queue: 'order-q'" in done.output
