#!/usr/bin/env python3
"""Staged mutation runs of one file of ptm-collections (the queue passes of issue 19).

cargo-mutants 27.1 cannot select some mutants (its `--re`/`--exclude-re` skip the "delete field"
mutants) and runs every filtered test of a mutant even after the first failure. This driver
takes the mutants from cargo-mutants itself and runs them by hand, in a scratch copy of the
tree (never the working tree), one at a time:

    cargo mutants --package ptm-collections --file collections/src/queue.rs --list --json --diff \
        > all.json                                   # then select some of them into sel.json
    cp -r <tree without target/ and .git/> /tmp/scratch
    MUTANTS_SRC=/tmp/scratch nice -n 19 .ci/mutants-staged.py sel.json results.jsonl

For each mutant: its diff applied to the file (`patch`), the collections' test binary built
(no debug info; a build error is "unviable"), then the test filter in three stages, fastest
tests first (stage A: all but the ten slowest, under a second each; B: seven of 1-3 s; C: the
four slowest), stopping at the first failure ("caught"; a 120 s timeout per stage is
"timeout"). A survivor of the three stages is run once more with every module that uses a
queue (`stage2`). The tests run under an 8 GiB address-space limit: a mutant that turns a loop
into an endless one growing a vector then aborts ("memory allocation failed", counted as
caught) instead of filling the machine's memory. One JSON line per mutant in the results
file; a re-run skips the mutants already in it. The file is restored at the end.
"""
import json
import os
import resource
import subprocess
import sys
import time

SRC = os.environ.get('MUTANTS_SRC', '/tmp/mutants-scratch')
F = 'collections/src/queue.rs'
ENV = dict(os.environ, CARGO_PROFILE_DEV_DEBUG='0', CARGO_PROFILE_TEST_DEBUG='0')
FILTER = ['queue_', 'failed_ops::queue', 'drains::queue', 'deque::', 'derived_value']
SLOW = ['queue_growth::push_flushes_are_bounded_by_one_chunk', 'queue_model::queues_equal_vecdeque_across_reopen',
        'deque::deque_matches_vecdeque_across_reopens', 'deque::deque_crash_images_recover']
MID = ['queue_crash::', 'failed_ops::queue_', 'deque::crash_images', 'queue_positions_and_damage::get_at',
       'deque::deque_aborts', 'capacity::task_queue', 'queue_model::u64s']
BROAD = ('deque:: capacity:: derived_value drains:: failed_ops:: keys:: log_bytes:: model:: queue_ '
         'std_parity verify:: walk:: fuzz_corpus nested::').split()


def limit():
    resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))


def binary():
    r = subprocess.run(['cargo', 'test', '-q', '-p', 'ptm-collections', '--test', 'collections', '--no-run',
                        '--message-format=json'], cwd=SRC, env=ENV, capture_output=True, text=True)
    for line in r.stdout.splitlines():
        try:
            j = json.loads(line)
        except ValueError:
            continue
        if j.get('reason') == 'compiler-artifact' and j.get('executable') and j['target']['name'] == 'collections':
            return j['executable']
    raise SystemExit('no test binary')


def run(exe, args, skip=()):
    a = ['nice', '-n', '19', 'timeout', '120', exe, '-q'] + args
    for s in skip:
        a += ['--skip', s]
    t = time.time()
    r = subprocess.run(a, cwd=os.path.join(SRC, 'collections'), env=ENV, capture_output=True, text=True,
                       preexec_fn=limit)
    return r.returncode, time.time() - t, (r.stdout + r.stderr)[-3000:]


def main():
    sel = json.load(open(sys.argv[1]))
    done = set()
    if os.path.exists(sys.argv[2]):
        done = {json.loads(l)['name'] for l in open(sys.argv[2]) if l.strip()}
    out = open(sys.argv[2], 'a')
    orig = open(os.path.join(SRC, F)).read()
    try:
        for m in sel:
            if m['name'] in done:
                continue
            t0 = time.time()
            open(os.path.join(SRC, F), 'w').write(orig)
            p = subprocess.run(['patch', '-s', F], cwd=SRC, input=m['diff'], text=True, capture_output=True)
            rec = {'name': m['name']}
            if p.returncode:
                rec['outcome'] = 'patchfail'
                rec['log'] = p.stdout + p.stderr
            else:
                b = subprocess.run(['nice', '-n', '19', 'timeout', '400', 'cargo', 'test', '-q', '-p',
                                    'ptm-collections', '--test', 'collections', '--no-run'],
                                   cwd=SRC, env=ENV, capture_output=True, text=True)
                rec['build_s'] = round(time.time() - t0, 1)
                if b.returncode:
                    rec['outcome'] = 'unviable'
                    rec['log'] = b.stderr[-1500:]
                else:
                    exe = binary()
                    rec['outcome'] = 'missed'
                    for name, args, skip in [('A', FILTER, SLOW + MID), ('B', MID, SLOW), ('C', SLOW, [])]:
                        rc, dt, log = run(exe, args, skip)
                        rec['stage_' + name] = round(dt, 1)
                        if rc != 0:
                            rec.update(outcome='timeout' if rc == 124 else 'caught', rc=rc, by=name, log=log)
                            break
                    if rec['outcome'] == 'missed':
                        rc, dt, log = run(exe, BROAD)
                        rec['stage2_s'] = round(dt, 1)
                        rec['stage2'] = 'timeout' if rc == 124 else ('caught' if rc else 'missed')
                        if rc:
                            rec['log'] = log
            rec['total_s'] = round(time.time() - t0, 1)
            out.write(json.dumps(rec) + '\n')
            out.flush()
            print(rec['outcome'], rec.get('stage2', ''), rec['total_s'], m['name'], flush=True)
    finally:
        open(os.path.join(SRC, F), 'w').write(orig)


if __name__ == '__main__':
    main()
