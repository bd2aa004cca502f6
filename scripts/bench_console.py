"""Console page latency under concurrent sessions (issue 11's load benchmark).

Logs N sessions into a running console (one login each), then every session requests the
dashboard, the series list, a series page, the viewer's info.json and one axial slice PNG in a
loop for DURATION seconds. Reports p50/p95 per page and the p95 ratio against one session
measured the same way in the same run (the machine is shared: read the ratio, not the ms).

usage: bench_console.py BASE_URL USER PASSWORD SERIES_ID [--sessions 20] [--duration 20]
"""
import argparse, concurrent.futures, http.cookiejar, re, ssl, statistics, threading, time
import urllib.parse, urllib.request

ap = argparse.ArgumentParser()
ap.add_argument("base"); ap.add_argument("user"); ap.add_argument("password")
ap.add_argument("series", type=int)
ap.add_argument("--sessions", type=int, default=20)
ap.add_argument("--duration", type=float, default=20.0)
a = ap.parse_args()
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE

def session():
    jar = http.cookiejar.CookieJar()
    op = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx),
                                     urllib.request.HTTPCookieProcessor(jar))
    page = op.open(a.base + "/login").read()
    csrf = re.search(rb'name="csrf" value="([^"]+)"', page).group(1).decode()
    body = urllib.parse.urlencode({"csrf": csrf, "username": a.user, "password": a.password}).encode()
    r = op.open(urllib.request.Request(a.base + "/login", data=body, headers={"Origin": a.base}))
    if "/login" in r.geturl():
        raise SystemExit("login failed (wrong password, or the account is locked)")
    return op

s = a.series
pages = {"dashboard": "/", "series list": "/series", "series page": f"/series/{s}",
         "viewer info.json": f"/series/{s}/viewer/info.json",
         "axial slice PNG": f"/series/{s}/viewer/slice/axial/{{i}}.png?window=bone&overlay=1"}

def run(n):
    ops = [session() for _ in range(n)]
    # Warm the viewer cache once (loading the series is a one-off per series).
    ops[0].open(a.base + pages["viewer info.json"]).read()
    times = {k: [] for k in pages}; lock = threading.Lock(); errors = []
    stop = time.monotonic() + a.duration
    def worker(k, op):
        i = 0
        while time.monotonic() < stop:
            for name, path in pages.items():
                t = time.monotonic()
                try:
                    op.open(a.base + path.format(i=20 + (k * 7 + i) % 100)).read()
                except Exception as e:  # noqa: BLE001 - counted and reported
                    errors.append(f"{name}: {e}")
                    continue
                with lock:
                    times[name].append(time.monotonic() - t)
            i += 1
    with concurrent.futures.ThreadPoolExecutor(n) as ex:
        list(ex.map(lambda kv: worker(*kv), enumerate(ops)))
    return times, errors

def p(v, q):
    v = sorted(v); return v[min(len(v) - 1, int(q * len(v)))]

base, e1 = run(1)
load, en = run(a.sessions)
print(f"| page | 1 session p50 / p95 (ms) | {a.sessions} sessions p50 / p95 (ms) | requests | p95 ratio |")
print("|---|---:|---:|---:|---:|")
for name in pages:
    b, l = base[name], load[name]
    print(f"| {name} | {1000 * statistics.median(b):.0f} / {1000 * p(b, .95):.0f} | "
          f"{1000 * statistics.median(l):.0f} / {1000 * p(l, .95):.0f} | {len(l)} | {p(l, .95) / p(b, .95):.1f}× |")
allb = [x for v in base.values() for x in v]; alll = [x for v in load.values() for x in v]
print(f"| all pages | {1000 * statistics.median(allb):.0f} / {1000 * p(allb, .95):.0f} | "
      f"{1000 * statistics.median(alll):.0f} / {1000 * p(alll, .95):.0f} | {len(alll)} | {p(alll, .95) / p(allb, .95):.1f}× |")
print(f"errors: {len(e1) + len(en)}" + (f" (first: {(e1 + en)[0]})" if e1 + en else ""))
