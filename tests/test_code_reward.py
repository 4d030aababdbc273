"""flowrl_nb.code_reward: hostile programs end within their limits with reward 0 and a recorded reason, and leave the
host unharmed; a trainer whose reward runs them keeps going."""
import os, secrets, shutil, signal, socket, subprocess, sys, tempfile, textwrap, threading, time
from pathlib import Path

import pytest
import torch

from flowrl_nb.code_reward import (CodeReward, Sandbox, SandboxLimits, _uid_processes, extract_code, normalize_tests,
                                   score_program, stdout_matches, values_match)

IS_ROOT = os.geteuid() == 0
REPO = Path(__file__).resolve().parents[1]
LIMITS = SandboxLimits(time_limit=3.0, memory_mb=512, processes=32)
ADD_TESTS = 'assert add(1, 2) == 3\nassert add(-1, 1) == 0\nassert add(20, 22) == 42'
STDIO_TESTS = [{'input': '1 2\n', 'output': '3\n'}, {'input': '20 22\n', 'output': '42\n'}]


@pytest.fixture(scope='module')
def sandbox():
    return Sandbox(LIMITS, workers=4)


def test_protections_active_on_this_machine(sandbox):
    p = sandbox.protections
    print('\nsandbox protections:', p)
    assert p['nproc_enforced'], p          # the bounded fork probe was stopped by RLIMIT_NPROC
    assert 'blocked' in p['network'], p
    if IS_ROOT:
        assert all(61000 <= u < 61000 + sandbox.uid_range for u in sandbox.uids) and len(set(sandbox.uids)) == 4, p
        assert p['user'].startswith('uids ') and p['network'].startswith('network namespace') and not p['host_tmp_visible']
        assert p['capabilities'] == '0' * 16, p    # nothing left of root's powers after the drop
        if shutil.which('bwrap'):                   # tools/test.sh installs it (Debian: bubblewrap)
            assert p['isolation'].startswith('bubblewrap') and p['pid_namespace'] and not p['host_files_visible'], p
            assert p['filesystem'].startswith('read-only: the interpreter'), p
        else:
            assert p['filesystem'].startswith('private tmpfs') and p['host_files_visible'], p


def fenced(code): return f'Here is my solution.\n```python\n{code}\n```\n'


def run_one(sandbox, code, tests):
    "Score through the reward function, as the trainer does; return (reward, result, seconds)."
    reward = CodeReward(sandbox=sandbox)
    t0 = time.monotonic()
    r = reward(completions=[fenced(code)], tests=[tests])
    return r[0], reward.last_results[0], time.monotonic() - t0


def assert_no_leftovers(sandbox):
    for uid in sandbox.uids:
        if uid is not None: assert _uid_processes(uid) == [], f'processes of sandbox uid {uid} survived'


# ------------------------------------------------------------------ hostile programs, one by one
def test_infinite_loop(sandbox):
    r, res, dt = run_one(sandbox, 'def add(a, b):\n    while True: pass', ADD_TESTS)
    assert r == 0.0 and res.reason in ('timeout', 'cpu_limit') and dt < LIMITS.time_limit + 5
    r, res, dt = run_one(sandbox, 'while True: pass', STDIO_TESTS)
    assert r == 0.0 and res.reason in ('timeout', 'cpu_limit') and dt < LIMITS.time_limit + 5
    assert_no_leftovers(sandbox)


def test_fork_bomb(sandbox):
    if not sandbox.protections['nproc_enforced']:
        pytest.skip('RLIMIT_NPROC is not enforced here: a real fork bomb would not be contained')
    bomb = 'import os\nwhile True:\n    try: os.fork()\n    except OSError: pass'
    r, res, dt = run_one(sandbox, bomb, STDIO_TESTS)
    assert r == 0.0 and res.reason in ('timeout', 'cpu_limit', 'killed'), res
    assert dt < LIMITS.time_limit + 10
    assert_no_leftovers(sandbox)
    assert subprocess.run(['true']).returncode == 0   # the host can still start processes


def test_setsid_escape_is_still_killed(sandbox):
    code = ('import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\nprint(3)')
    r, res, _ = run_one(sandbox, code, STDIO_TESTS[:1])
    assert r == 1.0    # it printed the right answer; its escaped child must not outlive the run
    assert_no_leftovers(sandbox)


def test_memory_bomb(sandbox):
    r, res, dt = run_one(sandbox, 'a = []\nwhile True: a.append(bytearray(50 << 20))', STDIO_TESTS)
    assert r == 0.0 and 'MemoryError' in res.reason, res
    assert dt < LIMITS.time_limit + 5


def test_huge_print(sandbox):
    r, res, dt = run_one(sandbox, 'import sys\nwhile True: sys.stdout.write("x" * 65536)', STDIO_TESTS)
    assert r == 0.0 and res.reason == 'output_limit'
    r, res, _ = run_one(sandbox, 'print("x" * 10**8)\ndef add(a, b): return a + b', ADD_TESTS)
    assert r == 0.0 and res.reason == 'output_limit'   # the cap applies to expression checks too


needs_separate_user = pytest.mark.skipif(not IS_ROOT, reason='without root the sandbox runs as the current user, '
                                         'which cannot be kept from its own files and processes (see Sandbox.protections)')


@needs_separate_user
def test_writes_and_deletes_outside_its_directory(sandbox, tmp_path):
    host_dir = tmp_path / 'open'; host_dir.mkdir(); os.chmod(host_dir, 0o777)   # even a world-writable host folder
    canary = host_dir / 'canary.txt'; canary.write_text('intact'); os.chmod(canary, 0o666)
    repo_target = Path(__file__).resolve().parents[1] / f'ESCAPED_{secrets.token_hex(4)}'
    other = Path(tempfile.mkdtemp(prefix='flowrl_canary_', dir='/var/lib' if os.access('/var/lib', os.W_OK) else None))
    (other / 'keep.txt').write_text('intact')
    code = f'''
import os, shutil
for p in [{str(canary)!r}, {str(other / 'keep.txt')!r}]:
    for f in (lambda: os.remove(p), lambda: open(p, 'w').write('pwned')):
        try: f()
        except OSError: pass
for p in [{str(repo_target)!r}, {str(host_dir / 'new.txt')!r}, '../escape.txt', '/tmp/escape.txt', {str(other / 'new.txt')!r}]:
    try: open(p, 'w').write('pwned')
    except OSError: pass
try: shutil.rmtree({str(other)!r})
except OSError: pass
print('done')
'''
    try:
        r, res, _ = run_one(sandbox, code, STDIO_TESTS[:1])
        assert r == 0.0 and res.reason == 'wrong_answer'
        assert canary.read_text() == 'intact' and (other / 'keep.txt').read_text() == 'intact'
        assert not repo_target.exists() and not (host_dir / 'new.txt').exists() and not (other / 'new.txt').exists()
        assert not Path('/tmp/escape.txt').exists() or Path('/tmp/escape.txt').read_text() != 'pwned'
    finally:
        import shutil
        shutil.rmtree(other, ignore_errors=True)
        if repo_target.exists(): repo_target.unlink()


def test_reading_the_parents_environment_secrets(sandbox, monkeypatch):
    secret = 'sk-' + secrets.token_hex(16)
    monkeypatch.setenv('FLOWRL_TEST_SECRET', secret)
    code = '''
import os, glob
print(dict(os.environ))
for p in ['/proc/%d/environ' % os.getppid(), '/proc/1/environ'] + glob.glob('/proc/*/environ'):
    try: print(open(p, 'rb').read())
    except OSError: pass
'''
    reward = CodeReward(sandbox=sandbox)
    assert reward(completions=[fenced(code)], tests=[STDIO_TESTS[:1]]) == [0.0]
    out = sandbox.run({'solution.py': code}, 'main')
    assert secret not in out.stdout and secret not in out.stderr
    assert 'FLOWRL_TEST_SECRET' not in out.stdout


def test_opening_a_socket(sandbox):
    srv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen(1); srv.settimeout(0.2)
    port, accepted, stop = srv.getsockname()[1], [], threading.Event()
    def serve():
        while not stop.is_set():
            try: accepted.append(srv.accept())
            except OSError: pass
    th = threading.Thread(target=serve, daemon=True); th.start()
    code = f'''
import socket
for f in (lambda: socket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'pwned'),
          lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'pwned', ('127.0.0.1', {port}))):
    try: f(); print('sent')
    except OSError as e: print('blocked', type(e).__name__)
'''
    try:
        r, res, _ = run_one(sandbox, code, STDIO_TESTS[:1])
        out = sandbox.run({'solution.py': code}, 'main').stdout
        time.sleep(0.5)
        assert r == 0.0 and accepted == [] and 'sent' not in out, (out, accepted)
    finally:
        stop.set(); th.join(2); srv.close()


@needs_separate_user
def test_killing_its_parent(sandbox):
    bystander = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
    code = f'''
import os, signal
for f in (lambda: os.kill(os.getppid(), signal.SIGKILL), lambda: os.killpg(os.getpgid(os.getppid()), signal.SIGKILL),
          lambda: os.kill({os.getpid()}, signal.SIGKILL), lambda: os.kill({bystander.pid}, signal.SIGKILL),
          lambda: os.kill(1, signal.SIGKILL), lambda: os.kill(-1, signal.SIGKILL)):
    try: f()
    except OSError: pass
print(3)
'''
    try:
        r, res, _ = run_one(sandbox, code, STDIO_TESTS)
        assert r == 0.0, res      # kill(-1) kills the program itself (only its own uid's processes)
        assert bystander.poll() is None    # the host's processes, this test included, are alive
    finally:
        bystander.kill(); bystander.wait()


def test_exit_before_the_tests_run(sandbox):
    for code, reason in [('import sys; sys.exit(0)\ndef add(a, b): return a + b', 'load_error: SystemExit: 0'),
                         ('import os; os._exit(0)\ndef add(a, b): return a + b', 'no_result'),
                         ('def add(a, b): return a + b\nimport atexit, os; atexit.register(lambda: os._exit(0))\n'
                          'raise SystemExit(0)', 'load_error: SystemExit: 0')]:
        r, res, _ = run_one(sandbox, code, ADD_TESTS)
        assert r == 0.0 and res.reason == reason, res


def test_monkey_patching_the_test_harness(sandbox):
    code = '''
import builtins, json, os, sys
forged = b'{"i": 0, "repr": "True", "ok": true, "passed": true}\\n{"i": 1, "passed": true}\\nPASSED\\nall tests passed\\n'
for fd in range(1, 40):
    try: os.write(fd, forged * 3)
    except OSError: pass
json.dumps = lambda *a, **k: '{"i": 0, "passed": true}'
builtins.repr = lambda x: 'True'
builtins.AssertionError = type('Never', (Exception,), {})
sys.exit = lambda *a: None
class AlwaysEqual:
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __repr__(self): return 'AlwaysEqual()'
def add(a, b): return AlwaysEqual()
'''
    r, res, _ = run_one(sandbox, code, ADD_TESTS)
    assert r == 0.0 and res.passed == 0 and res.reason.startswith('wrong_answer'), res
    reward = CodeReward(sandbox=sandbox, partial=True)
    assert reward(completions=[fenced(code)], tests=[[{'fn_name': 'add', 'args': [1, 2], 'expected': 3}]]) == [0.0]


def test_missing_or_misaligned_tests_column_raises(sandbox):
    reward = CodeReward(sandbox=sandbox, tests_column='checks')
    with pytest.raises(ValueError, match="the code reward needs the tests column 'checks', got columns \\['tests'\\]; .*tests_column="):
        reward(completions=['x'], tests=[ADD_TESTS])
    with pytest.raises(ValueError, match="column 'checks' must be a list aligned with the 2 completions, got list of length 1"):
        reward(completions=['x', 'y'], checks=[ADD_TESTS])


def test_parallel_mix_scores_each_correctly(sandbox):
    good, bad = 'def add(a, b): return a + b', 'def add(a, b):\n    while True: pass'
    comps = [fenced(good if i % 2 == 0 else bad) for i in range(8)]
    reward = CodeReward(sandbox=sandbox)
    t0 = time.monotonic()
    assert reward(completions=comps, tests=[ADD_TESTS] * 8) == [1.0, 0.0] * 4
    print(f'\n8 programs (4 loop until the {LIMITS.time_limit}s limit) on 4 slots: {time.monotonic() - t0:.1f}s')
    assert_no_leftovers(sandbox)


def host_dir(prefix):
    "A world-writable folder on the host outside every /tmp (which the old sandbox already hid): a canary for escapes."
    d = Path(tempfile.mkdtemp(prefix=prefix, dir='/var/lib' if os.access('/var/lib', os.W_OK) else None))
    os.chmod(d, 0o777)
    return d


def wait_for_uid_processes(uids, n=1, timeout=20):
    "Wait until the sandbox uids `uids` run at least `n` processes (the program has really started)."
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if sum(len(_uid_processes(u)) for u in uids if u is not None) >= n: return True
        time.sleep(0.02)
    return False


# ------------------------------------------------------------------ issue 13: what the old sandbox let through
def test_reading_host_files(sandbox):
    "Reading the tests or the answers off the host's disk is reward hacking: the program sees only the interpreter."
    answer = 'answer-' + secrets.token_hex(8)
    answers = REPO / f'.answers_{secrets.token_hex(4)}.txt'       # in the project's checkout, world-readable
    answers.write_text(answer + '\n'); os.chmod(answers, 0o644)
    outside = host_dir('flowrl_answers_'); (outside / 'answers.txt').write_text(answer + '\n')
    os.chmod(outside / 'answers.txt', 0o644)
    paths = ['/etc/passwd', '/etc/hostname', str(Path(__file__).resolve()), str(answers), str(outside / 'answers.txt'),
             f'/proc/{os.getpid()}/cmdline']   # the test's own process
    code = f"""
import os
for p in {paths!r}:
    try: open(p).read(); print('READ', p)
    except OSError as e: print('DENIED', p, type(e).__name__)
for d in ['/', '/etc', {str(REPO)!r}, '/root', '/home']:
    try: print('LIST', d, sorted(os.listdir(d)))
    except OSError as e: print('NOLIST', d, type(e).__name__)
"""
    hack = f'print(open({str(answers)!r}).read().strip())'   # "solves" the task by reading its answer
    try:
        out = sandbox.run({'solution.py': code}, 'main').stdout
        print('\n' + out)
        if sandbox.protections.get('host_files_visible'):
            pytest.skip('this sandbox has no private file-system view (no bubblewrap): see Sandbox.protections')
        assert 'READ' not in out and out.count('DENIED') == len(paths), out
        assert 'passwd' not in out.replace('DENIED /etc/passwd', '') and answers.name not in out.split('DENIED')[-1], out
        r, res, _ = run_one(sandbox, hack, [{'input': '', 'output': answer}])
        assert r == 0.0 and res.reason.startswith('runtime_error'), res
    finally:
        answers.unlink(missing_ok=True)
        shutil.rmtree(outside, ignore_errors=True)


SLOW_ADD = 'import time\ntime.sleep(1.5)\ndef add(a, b): return a + b'   # correct, and still running a while


def test_second_sandbox_in_this_process_leaves_the_first_running(sandbox):
    "A correct program scored 0 while a second sandbox with the same uid_base was created (its __init__ killed the uids)."
    got = {}
    th = threading.Thread(target=lambda: got.update(first=score_program(sandbox, SLOW_ADD, ADD_TESTS)))
    th.start()
    assert wait_for_uid_processes(sandbox.uids) or not IS_ROOT
    second = Sandbox(LIMITS, workers=4)          # same uid_base as the fixture's, while its program runs
    try:
        r2 = score_program(second, SLOW_ADD, ADD_TESTS)
        th.join(30)
        assert (got['first'].reason, r2.reason) == ('passed', 'passed'), (got, r2)
        if IS_ROOT: assert not set(second.uids) & set(sandbox.uids), (second.uids, sandbox.uids)
    finally:
        th.join(30)
        getattr(second, 'close', lambda: None)()


CHILD_SANDBOX = textwrap.dedent(f"""
    import sys
    from flowrl_nb.code_reward import Sandbox, SandboxLimits, score_program
    print('ready', flush=True); sys.stdin.readline()
    sb = Sandbox(SandboxLimits(time_limit=5), workers=4)
    print('uids', sb.uids, flush=True)
    print('reason', score_program(sb, {SLOW_ADD!r}, {ADD_TESTS!r}).reason, flush=True)
""")


def spawn_trainer(code, **kw):
    "A second trainer process running `code`; it imports the same flowrl_nb as this test (cwd and PYTHONPATH)."
    import flowrl_nb
    here = str(Path(flowrl_nb.__file__).resolve().parents[1])
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([here, *filter(None, [os.environ.get('PYTHONPATH')])])}
    return subprocess.Popen([sys.executable, '-c', code], cwd=here, env=env, text=True, **kw)


def test_sandbox_in_another_process_leaves_this_one_running(sandbox):
    "Two processes (two trainers, or a trainer and an evaluation) with the same uid_base run programs at the same time."
    child = spawn_trainer(CHILD_SANDBOX, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert child.stdout.readline().strip() == 'ready', child.stderr.read()
        got = {}
        th = threading.Thread(target=lambda: got.update(mine=score_program(sandbox, SLOW_ADD, ADD_TESTS)))
        th.start()
        assert wait_for_uid_processes(sandbox.uids) or not IS_ROOT
        child.stdin.write('go\n'); child.stdin.flush()      # the other process creates its sandbox now
        out, err = child.communicate(timeout=60)
        th.join(30)
        print('\nother process:', out)
        assert got['mine'].reason == 'passed', got
        assert 'reason passed' in out, (out, err)
    finally:
        if child.poll() is None: child.kill(); child.wait()


DAEMON = """
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:          # the grandchild: a daemon, detached from the program's session and pipes
        fd = os.open(os.devnull, os.O_RDWR)
        for k in (0, 1, 2): os.dup2(fd, k)
        time.sleep(DELAY)
        for p in ['CANARY', '/tmp/daemon.txt']:
            try: open(p, 'w').write('the daemon outlived its sandbox')
            except OSError: pass
        time.sleep(60)
    os._exit(0)
time.sleep(0.2)
print(3)
time.sleep(MAIN_SLEEP)
"""


@needs_separate_user
def test_daemonised_grandchild_dies_with_the_sandbox(sandbox):
    "A double-forked, setsid daemon is gone after the run — also when the trainer itself dies in the middle of a run."
    canary_dir = host_dir('flowrl_daemon_')
    canary = canary_dir / 'written.txt'
    try:
        # 1. the run ends normally
        code = DAEMON.replace('CANARY', str(canary)).replace('DELAY', '1.0').replace('MAIN_SLEEP', '0')
        r, res, _ = run_one(sandbox, code, STDIO_TESTS[:1])
        assert r == 1.0, res
        time.sleep(1.5)
        assert not canary.exists(), canary.read_text()
        assert_no_leftovers(sandbox)
        # 2. the trainer is SIGKILLed while the program (and its daemon) run: nothing may outlive it
        code = DAEMON.replace('CANARY', str(canary)).replace('DELAY', '2.0').replace('MAIN_SLEEP', '30')
        trainer = textwrap.dedent(f"""
            from flowrl_nb.code_reward import Sandbox, SandboxLimits
            sb = Sandbox(SandboxLimits(time_limit=60), workers=1)
            print('uids', *sb.uids, flush=True)
            sb.run({{'solution.py': {code!r}}}, 'main')
        """)
        child = spawn_trainer(trainer, stdout=subprocess.PIPE)
        uids = []
        try:
            line = child.stdout.readline().split()
            assert line[:1] == ['uids'], line
            uids = [int(u) for u in line[1:]]
            assert wait_for_uid_processes(uids, n=2), 'the program and its daemon never ran'
        finally:
            child.send_signal(signal.SIGKILL); child.wait()
        time.sleep(1.0)
        left = {u: _uid_processes(u) for u in uids}
        time.sleep(2.0)
        try:
            assert not any(left.values()), f'processes survived their trainer: {left}'
            assert not canary.exists(), 'the daemon wrote on the host after its trainer died'
        finally:
            from flowrl_nb.code_reward import _kill_uid
            for u in uids: _kill_uid(u)    # never leave them to the next test
    finally:
        shutil.rmtree(canary_dir, ignore_errors=True)


@needs_separate_user
def test_uid_slots_are_claimed_and_given_back(sandbox):
    "The fixture holds 61000..61003: a range of four has nothing left; a closed sandbox's uids are free again."
    if sandbox.uids != list(range(61000, 61004)): pytest.skip(f'another process holds some of 61000..61003: {sandbox.uids}')
    with pytest.raises(RuntimeError, match=r'only 0 of the 4 uids 61000\.\.61003 are free \(4 held by other live sandboxes'):
        Sandbox(LIMITS, workers=1, uid_range=4)
    with Sandbox(LIMITS, workers=2, uid_range=8) as other:
        taken = other.uids
        assert set(taken) <= set(range(61004, 61008)), taken
    assert other.closed
    with pytest.raises(RuntimeError, match='this Sandbox is closed'):
        other.run({'solution.py': 'print(1)'}, 'main')
    again = Sandbox(LIMITS, workers=2, uid_range=8)
    try: assert again.uids == taken
    finally: again.close()


def test_without_bubblewrap_the_fallback_says_what_it_cannot_do(monkeypatch):
    import flowrl_nb.code_reward as cr
    real_which = shutil.which
    monkeypatch.setattr(cr.shutil, 'which', lambda name, *a, **k: None if name == 'bwrap' else real_which(name, *a, **k))
    with Sandbox(LIMITS, workers=1) as sb:
        p = sb.protections
        assert 'bwrap is not installed (Debian: apt-get install bubblewrap)' in p['isolation'], p
        assert p['host_files_visible'] and not p['pid_namespace'] and 'blocked' in p['network'], p
        assert score_program(sb, 'def add(a, b): return a + b', ADD_TESTS).reason == 'passed'
    with pytest.raises(RuntimeError, match="isolation='bwrap' but bubblewrap cannot be used here: bwrap is not installed"):
        Sandbox(LIMITS, workers=1, isolation='bwrap')

# ------------------------------------------------------------------ pure helpers
def test_helpers():
    assert extract_code('```python\na\n```\n```python\nb\n```') == 'b\n'
    assert stdout_matches('1.0000001\n', '1') and not stdout_matches('1.1', '1')
    assert values_match([1, (2, 3)], [1, [2, 3]]) and not values_match(1, '1')
    checks, setup = normalize_tests({'inputs': ['1\n', '2\n'], 'outputs': ['1\n', '4\n']})
    assert [c.kind for c in checks] == ['stdio', 'stdio'] and setup == ''


# ------------------------------------------------------------------ a trainer keeps running through all of them
def hostile_programs(canary: Path) -> dict:
    "One program per attack; the destructive ones aim at a canary folder, never at real files."
    progs = {
        'infinite_loop': 'def add(a, b):\n    while True: pass',
        'memory_bomb': 'a = []\nwhile True: a.append(bytearray(50 << 20))',
        'huge_print': 'import sys\nwhile True: sys.stdout.write("x" * 65536)',
        'secrets': 'import os\nprint(os.environ)\nprint(open("/proc/%d/environ" % os.getppid()).read())',
        'socket': 'import socket\nsocket.create_connection(("127.0.0.1", 22), timeout=1)',
        'exit_early': 'import sys\nsys.exit(0)\ndef add(a, b): return a + b',
        'patch_harness': 'import builtins\nbuiltins.repr = lambda x: "3"\nclass E:\n    def __eq__(s, o): return True\ndef add(a, b): return E()',
        'correct': 'def add(a, b):\n    return a + b',
    }
    if IS_ROOT:  # only with a separate sandbox user (see needs_separate_user)
        progs['files'] = (f'import shutil\nshutil.rmtree({str(canary)!r}, ignore_errors=True)\n'
                          f'open({str(canary / "x")!r}, "w").write("pwned")\nopen("../x", "w").write("pwned")')
        progs['kill_parent'] = 'import os, signal\nos.kill(os.getppid(), signal.SIGKILL)'
        progs['fork_bomb'] = 'import os\nwhile True:\n    try: os.fork()\n    except OSError: pass'
    return progs


def test_trainer_survives_hostile_code_rewards(tmp_path):
    pytest.importorskip('transformers')
    from flowrl_nb.config import FlowRLConfig
    from flowrl_nb.trainer import Trainer
    torch.set_num_threads(1)
    code_reward = CodeReward(workers=2, limits=SandboxLimits(time_limit=2.0, memory_mb=512))
    canary = tmp_path / 'canary'; canary.mkdir(); (canary / 'keep.txt').write_text('intact')
    hostile = hostile_programs(canary)
    if hostile.get('fork_bomb') and not code_reward.sandbox.protections['nproc_enforced']: del hostile['fork_bomb']
    programs, seen = list(hostile.values()), []
    def hostile_reward(prompts, completions, **columns):
        "Map each sampled completion to the next hostile program, then score it in the sandbox."
        comps = [fenced(programs[(len(seen) + i) % len(programs)]) for i in range(len(completions))]
        seen.extend(comps)
        out = code_reward(completions=comps, tests=[ADD_TESTS] * len(comps))
        seen_reasons.extend(r.reason for r in code_reward.last_results)
        return out
    seen_reasons = []
    cfg = FlowRLConfig(prompts_per_step=2, num_generations=6, num_mini_batches=1, max_steps=2, save_steps=0,
                       output_dir=str(tmp_path / 'run'))
    tr = Trainer(cfg, reward_funcs=[hostile_reward])
    hist = tr.train(2)
    assert tr.step_count == 2 and len(hist) == 2 and tr.status == 'finished'
    assert len(seen) == 24 and {p for p in programs} <= {s.split('```python\n')[1].rsplit('\n```', 1)[0] for s in seen}
    assert sum(r == 'passed' for r in seen_reasons) == sum(hostile['correct'] in s for s in seen)   # only the correct program
    assert (canary / 'keep.txt').read_text() == 'intact' and not (canary / 'x').exists()
    assert all(m['reward/errors'] == 0 for m in hist)
    print('\nreasons:', sorted(set(seen_reasons)))
