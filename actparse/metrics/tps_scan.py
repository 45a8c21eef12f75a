"""Kinetics-TPS part-result files read from their bytes straight into arrays (compiled with numba).

The official evaluation loads ``gt_part_result.json`` and ``pred_part_result.json`` with
``json.load`` and walks the dicts; most of its time goes into building and walking those Python
objects. :func:`scan_part_result` reads the same bytes in one compiled pass (a state machine over
the JSON tokens) into the flat arrays of :class:`actparse.metrics.tps_arrays.PartFrames`, and
:func:`inputs_from_bytes` scans the ground truth and the prediction at once (two threads; the scan
releases the GIL) and joins them the way :func:`actparse.metrics.tps.prepare` joins the loaded
dicts. The first call after an install compiles the scanner (about 10 s; numba caches it on disk).

The scanner takes the layout ``{video: {frame: {"humans": [{"box": [4 numbers], "parts": {name:
{"box": [4 numbers], "verb": "state" | ["state", ...]}}}]}}}`` with any other keys, in any order,
and any JSON whitespace. Whatever it does not take in exactly the way ``json.loads`` would
(invalid JSON, ``NaN`` / ``Infinity``, a repeated key inside a frame, human or part, escapes in a
part name or a state, a box that is not 4 numbers (``[x1, y1, x2, y2, score]`` boxes, which the
official code scores by their first four, included), a state that is not a string or a list of
strings, an integer beyond 2**53, nesting deeper than 64) makes it answer None, and the caller
reads the file with ``json.loads`` instead: the result is always the one of the dict route.

Numbers are converted as Python's ``float`` converts them (correctly rounded): a decimal
significand up to 2**53 with a decimal exponent within +-22 by one exact multiplication or division
(Clinger's fast path: the usual ``round(x, 2)`` boxes), anything else (17-digit ``repr`` floats,
say) by Python's ``float`` on the number's text, which is slower. A repeated video or frame key
keeps the first position and the last value, as ``json.loads`` does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
from numba import njit

from .tps_arrays import OTHER, PartFrames, TPSInputs, run_starts

# byte values
_QUOTE, _BSLASH, _COLON, _COMMA = 34, 92, 58, 44
_LBRACE, _RBRACE, _LBRACK, _RBRACK = 123, 125, 91, 93
_MINUS, _PLUS, _DOT, _ZERO, _NINE = 45, 43, 46, 48, 57

_K_HUMANS = np.frombuffer(b"humans", np.uint8).copy()
_K_BOX = np.frombuffer(b"box", np.uint8).copy()
_K_PARTS = np.frombuffer(b"parts", np.uint8).copy()
_K_VERB = np.frombuffer(b"verb", np.uint8).copy()
_POW10 = np.array([10.0 ** k for k in range(23)], np.float64)  # exact doubles 1e0 .. 1e22
_MAX_DEPTH = 64
_MAX_STRINGS = 1 << 16  # distinct part names + states


@njit(cache=True, nogil=True)
def _hex(c):
    return (48 <= c <= 57) or (65 <= c <= 70) or (97 <= c <= 102)


@njit(cache=True, nogil=True, inline="always")
def _string_end(b, s):
    """A JSON string's content starts at ``b[s]``: (position of its closing quote, 1 if it has
    escapes else 0), or (-1, 0) where ``json.loads`` would refuse it (a bad escape, a control
    character, no closing quote)."""
    n = len(b)
    j = s
    esc = 0
    while j < n:
        x = b[j]
        if x == _QUOTE:
            return j, esc
        if x == _BSLASH:
            esc = 1
            if j + 1 >= n:
                return -1, 0
            y = b[j + 1]
            if y == 117:  # \uXXXX
                if j + 5 >= n or not (_hex(b[j + 2]) and _hex(b[j + 3]) and _hex(b[j + 4]) and _hex(b[j + 5])):
                    return -1, 0
                j += 6
                continue
            if not (y == _QUOTE or y == _BSLASH or y == 47 or y == 98 or y == 102 or y == 110 or y == 114
                    or y == 116):
                return -1, 0
            j += 2
            continue
        if x < 32:  # control characters are not allowed in JSON strings (json.loads strict)
            return -1, 0
        j += 1
    return -1, 0


@njit(cache=True, nogil=True)
def _literal(b, i):
    """true / false / null at ``b[i]``: position after it, or -1 (NaN / Infinity: not taken)."""
    n = len(b)
    c = b[i]
    if c == 116 and i + 4 <= n and b[i + 1] == 114 and b[i + 2] == 117 and b[i + 3] == 101:
        return i + 4
    if c == 110 and i + 4 <= n and b[i + 1] == 117 and b[i + 2] == 108 and b[i + 3] == 108:
        return i + 4
    if c == 102 and i + 5 <= n and b[i + 1] == 97 and b[i + 2] == 108 and b[i + 3] == 115 and b[i + 4] == 101:
        return i + 5
    return -1


@njit(cache=True, nogil=True)
def _is(b, s, e, lit):
    if e - s != len(lit):
        return False
    for k in range(len(lit)):
        if b[s + k] != lit[k]:
            return False
    return True


@njit(cache=True, nogil=True)
def _intern(b, s, e, slots, slot_id, t_s, t_e, n_t):
    """Id of the string ``b[s:e]`` (ids in order of first appearance): (id, n_t); id -1 when full.
    ``slots`` / ``slot_id``: an open-addressing hash table (FNV-1a hash, 0 = empty slot)."""
    h = np.uint64(14695981039346656037)
    for k in range(s, e):
        h = (h ^ np.uint64(b[k])) * np.uint64(1099511628211)
    h |= np.uint64(1)
    mask = len(slots) - 1
    j = np.int64(h & np.uint64(mask))
    while slots[j] != 0:
        if slots[j] == h:
            sid = slot_id[j]
            if _is(b, t_s[sid], t_e[sid], b[s:e]):
                return sid, n_t
        j = (j + 1) & mask
    if n_t >= len(t_s):
        return -1, n_t
    slots[j] = h
    slot_id[j] = n_t
    t_s[n_t] = s
    t_e[n_t] = e
    return n_t, n_t + 1


# roles of the containers and values the scanner walks through
_R_SKIP, _R_VIDEOS, _R_FRAMES, _R_FRAME, _R_HUMANS, _R_HUMAN, _R_HBOX = 0, 1, 2, 3, 4, 5, 6
_R_PARTS, _R_PART, _R_PBOX, _R_VERB, _R_VERBS, _R_NUM, _R_VSTR = 7, 8, 9, 10, 11, 12, 13
# what comes next
_E_VALUE, _E_KEY, _E_COLON, _E_NEXT = 0, 1, 2, 3


@njit(cache=True, nogil=True)
def _scan(b, cap, cap_s):
    """The whole file in one pass (a state machine over the JSON tokens; no calls on the hot path).
    Returns a tuple of arrays and counts; status 0 = taken, 1 = not taken."""
    n = len(b)
    v_s = np.empty(cap, np.int64)
    v_e = np.empty(cap, np.int64)
    v_f0 = np.empty(cap, np.int64)
    v_esc = np.zeros(cap, np.int64)
    f_s = np.empty(cap, np.int64)
    f_e = np.empty(cap, np.int64)
    f_esc = np.zeros(cap, np.int64)
    f_h0 = np.empty(cap, np.int64)
    h_box = np.empty((cap, 4), np.float64)
    h_p0 = np.empty(cap, np.int64)
    p_name = np.empty(cap, np.int64)
    p_box = np.empty((cap, 4), np.float64)
    p_kind = np.empty(cap, np.int8)  # 0: "state", 1: ["state", ...]
    p_v0 = np.empty(cap, np.int64)
    p_len = np.empty(cap, np.int64)  # len(verb): characters of a string, items of a list
    vs = np.empty(cap_s, np.int64)
    hs_pos = np.empty(4 * cap, np.int64)
    hs_s = np.empty(4 * cap, np.int64)
    hs_e = np.empty(4 * cap, np.int64)
    ps_pos = np.empty(4 * cap, np.int64)
    ps_s = np.empty(4 * cap, np.int64)
    ps_e = np.empty(4 * cap, np.int64)
    t_s = np.empty(_MAX_STRINGS, np.int64)
    t_e = np.empty(_MAX_STRINGS, np.int64)
    slots = np.zeros(4 * _MAX_STRINGS, np.uint64)  # string hash table, load factor <= 1/4
    slot_id = np.zeros(4 * _MAX_STRINGS, np.int64)
    stack = np.empty(_MAX_DEPTH, np.int64)  # role of each open container
    is_obj = np.empty(_MAX_DEPTH, np.bool_)
    nv = nf = nh = npt = nvs = nhs = nps = nt = 0
    d = 0
    expect = _E_VALUE
    first = False  # the container just opened (may close at once)
    nxt = _R_VIDEOS  # role of the next value
    k_box = 0  # numbers read into the open box
    got_humans = got_hbox = got_parts = got_pbox = got_verb = False
    done = False
    status = 1
    i = 0
    while True:
        while i < n and (b[i] == 32 or b[i] == 10 or b[i] == 13 or b[i] == 9):
            i += 1
        if done:
            if i == n:
                status = 0
            break
        if i >= n:
            break
        c = b[i]
        close = False
        if expect == _E_NEXT:
            if c == _COMMA:
                i += 1
                expect = _E_KEY if is_obj[d - 1] else _E_VALUE
                first = False
                continue
            if (c == _RBRACE and is_obj[d - 1]) or (c == _RBRACK and not is_obj[d - 1]):
                close = True
            else:
                break
        elif expect == _E_COLON:
            if c != _COLON:
                break
            i += 1
            expect = _E_VALUE
            continue
        elif expect == _E_KEY:
            if c == _RBRACE and first:
                close = True
            elif c != _QUOTE:
                break
            else:
                # ---- a key
                s = i + 1
                e, esc = _string_end(b, s)
                if e < 0:
                    break
                i = e + 1
                expect = _E_COLON
                r = stack[d - 1]
                if r == _R_SKIP:
                    nxt = _R_SKIP
                elif r == _R_VIDEOS:
                    v_s[nv] = s
                    v_e[nv] = e
                    v_esc[nv] = esc
                    v_f0[nv] = nf
                    nv += 1
                    nxt = _R_FRAMES
                elif r == _R_FRAMES:
                    f_s[nf] = s
                    f_e[nf] = e
                    f_esc[nf] = esc
                    f_h0[nf] = nh
                    nf += 1
                    nxt = _R_FRAME
                elif r == _R_FRAME:
                    if _is(b, s, e, _K_HUMANS):
                        if got_humans:
                            break
                        got_humans = True
                        nxt = _R_HUMANS
                    else:
                        nxt = _R_SKIP
                elif r == _R_HUMAN:
                    if _is(b, s, e, _K_BOX):
                        if got_hbox:
                            break
                        got_hbox = True
                        nxt = _R_HBOX
                    elif _is(b, s, e, _K_PARTS):
                        if got_parts:
                            break
                        got_parts = True
                        nxt = _R_PARTS
                    else:
                        nxt = _R_SKIP
                elif r == _R_PARTS:
                    if esc:
                        break
                    sid, nt = _intern(b, s, e, slots, slot_id, t_s, t_e, nt)
                    if sid < 0:
                        break
                    dup = False
                    for q in range(h_p0[nh], npt):
                        if p_name[q] == sid:
                            dup = True
                    if dup:
                        break
                    p_name[npt] = sid
                    nxt = _R_PART
                else:  # _R_PART
                    if _is(b, s, e, _K_BOX):
                        if got_pbox:
                            break
                        got_pbox = True
                        nxt = _R_PBOX
                    elif _is(b, s, e, _K_VERB):
                        if got_verb:
                            break
                        got_verb = True
                        nxt = _R_VERB
                    else:
                        nxt = _R_SKIP
                continue
        else:  # _E_VALUE
            if c == _RBRACK and first and not is_obj[d - 1]:
                close = True
            elif c == _LBRACE or c == _LBRACK:
                obj = c == _LBRACE
                # the role this container takes, or not taken
                if nxt == _R_SKIP:
                    role = _R_SKIP
                elif obj and (nxt == _R_VIDEOS or nxt == _R_FRAMES or nxt == _R_FRAME or nxt == _R_HUMAN
                              or nxt == _R_PARTS or nxt == _R_PART):
                    role = nxt
                elif not obj and (nxt == _R_HUMANS or nxt == _R_HBOX or nxt == _R_PBOX):
                    role = nxt
                elif not obj and nxt == _R_VERB:
                    role = _R_VERBS
                else:
                    break
                if d >= _MAX_DEPTH:
                    break
                stack[d] = role
                is_obj[d] = obj
                d += 1
                i += 1
                first = True
                if obj:
                    expect = _E_KEY
                    if role == _R_FRAME:
                        got_humans = False
                    elif role == _R_HUMAN:
                        got_hbox = got_parts = False
                        h_p0[nh] = npt
                    elif role == _R_PART:
                        got_pbox = got_verb = False
                else:
                    expect = _E_VALUE
                    if role == _R_HUMANS:
                        nxt = _R_HUMAN
                    elif role == _R_HBOX or role == _R_PBOX:
                        nxt = _R_NUM
                        k_box = 0
                    elif role == _R_VERBS:
                        nxt = _R_VSTR
                        p_kind[npt] = 1
                        p_v0[npt] = nvs
                    else:
                        nxt = _R_SKIP
                continue
            elif c == _QUOTE:
                if not (nxt == _R_SKIP or nxt == _R_VERB or nxt == _R_VSTR):
                    break
                s = i + 1
                e, esc = _string_end(b, s)
                if e < 0:
                    break
                i = e + 1
                if nxt != _R_SKIP:
                    if esc:
                        break
                    sid, nt = _intern(b, s, e, slots, slot_id, t_s, t_e, nt)
                    if sid < 0:
                        break
                    if nxt == _R_VERB:
                        p_kind[npt] = 0
                        p_v0[npt] = nvs
                        nchar = 0
                        for q in range(s, e):
                            if (b[q] & 0xC0) != 0x80:
                                nchar += 1
                        p_len[npt] = nchar
                    vs[nvs] = sid
                    nvs += 1
                expect = _E_NEXT
                continue
            elif c == _MINUS or (_ZERO <= c <= _NINE):
                # ---- a number, inline: exact here (kind 0) or by Python's float later (kind 1)
                j = i
                neg = False
                if b[j] == _MINUS:
                    neg = True
                    j += 1
                if j >= n:
                    break
                w = np.int64(0)
                sig = 0
                lost = False
                e10 = 0
                x = b[j]
                if x == _ZERO:
                    j += 1
                elif 49 <= x <= 57:
                    while j < n and _ZERO <= b[j] <= _NINE:
                        if sig < 18:
                            w = w * 10 + (b[j] - _ZERO)
                            sig += 1
                        else:
                            e10 += 1
                            if b[j] != _ZERO:
                                lost = True
                        j += 1
                else:
                    break
                is_int = True
                if j < n and b[j] == _DOT:
                    is_int = False
                    j += 1
                    if j >= n or not (_ZERO <= b[j] <= _NINE):
                        break
                    while j < n and _ZERO <= b[j] <= _NINE:
                        dg = b[j] - _ZERO
                        if w == 0 and dg == 0:
                            e10 -= 1
                        elif sig < 18:
                            w = w * 10 + dg
                            sig += 1
                            e10 -= 1
                        elif dg != 0:
                            lost = True
                        j += 1
                if j < n and (b[j] == 101 or b[j] == 69):
                    is_int = False
                    j += 1
                    eneg = False
                    if j < n and (b[j] == _MINUS or b[j] == _PLUS):
                        eneg = b[j] == _MINUS
                        j += 1
                    if j >= n or not (_ZERO <= b[j] <= _NINE):
                        break
                    ex = 0
                    while j < n and _ZERO <= b[j] <= _NINE:
                        if ex < 100000:
                            ex = ex * 10 + (b[j] - _ZERO)
                        j += 1
                    e10 += -ex if eneg else ex
                if nxt == _R_NUM:
                    kind = 0
                    v = 0.0
                    if is_int:
                        if lost or w > 9007199254740992 or e10 != 0:
                            break  # an integer beyond 2**53
                        v = float(w)
                        if neg and w != 0:
                            v = -v
                    elif w == 0:
                        v = -0.0 if neg else 0.0
                    elif lost or w > 9007199254740992 or e10 < -22 or e10 > 22:
                        kind = 1
                    else:
                        v = float(w)
                        v = v * _POW10[e10] if e10 >= 0 else v / _POW10[-e10]
                        if neg:
                            v = -v
                    if k_box >= 4:
                        break
                    if stack[d - 1] == _R_HBOX:
                        h_box[nh, k_box] = v
                        if kind == 1:
                            hs_pos[nhs] = nh * 4 + k_box
                            hs_s[nhs] = i
                            hs_e[nhs] = j
                            nhs += 1
                    else:
                        p_box[npt, k_box] = v
                        if kind == 1:
                            ps_pos[nps] = npt * 4 + k_box
                            ps_s[nps] = i
                            ps_e[nps] = j
                            nps += 1
                    k_box += 1
                elif nxt != _R_SKIP:
                    break
                i = j
                expect = _E_NEXT
                continue
            else:
                if nxt != _R_SKIP:
                    break
                j = _literal(b, i)
                if j < 0:
                    break
                i = j
                expect = _E_NEXT
                continue
        if close:
            d -= 1
            i += 1
            r = stack[d]
            if r == _R_HUMAN:
                if not (got_hbox and got_parts):
                    break
                nh += 1
            elif r == _R_PART:
                if not (got_pbox and got_verb):
                    break
                npt += 1
            elif r == _R_FRAME:
                if not got_humans:
                    break
            elif r == _R_HBOX or r == _R_PBOX:
                if k_box != 4:
                    break
            elif r == _R_VERBS:
                p_len[npt] = nvs - p_v0[npt]
            first = False
            expect = _E_NEXT
            if d == 0:
                done = True
            else:
                pr = stack[d - 1]  # the parent: what its next element is
                if pr == _R_HUMANS:
                    nxt = _R_HUMAN
                elif pr == _R_SKIP:
                    nxt = _R_SKIP
    return (status, nv, nf, nh, npt, nvs, nhs, nps, nt, v_s, v_e, v_f0, v_esc, f_s, f_e, f_esc, f_h0,
            h_box, h_p0, p_name, p_box, p_kind, p_v0, p_len, vs, hs_pos, hs_s, hs_e, ps_pos, ps_s, ps_e,
            t_s, t_e)


@njit(cache=True, nogil=True)
def _counts(b):
    """(number of '{', number of '"', any byte >= 0x80) in one pass: sizes for the scanner's arrays."""
    nb = nq = 0
    hi = 0
    for k in range(len(b)):
        x = b[k]
        nb += x == _LBRACE
        nq += x == _QUOTE
        hi |= x
    return nb, nq, hi >= 0x80


@dataclass
class ScannedParts:
    """One part-result file as arrays (videos, frames, humans and parts in file order)."""

    video_names: list
    video_f0: np.ndarray  # frames of video occurrence k: video_f0[k] : video_f0[k + 1]
    frame_names: list
    frame_h0: np.ndarray
    frame_nh: np.ndarray
    human_box: np.ndarray  # float64 (n, 4)
    human_p0: np.ndarray
    human_np: np.ndarray
    part_name: np.ndarray  # ids into strings
    part_box: np.ndarray  # float64 (m, 4)
    verb_kind: np.ndarray  # 0: a string, 1: a list of strings
    verb_v0: np.ndarray  # the state strings of part p: verb_ids[verb_v0[p] : verb_v0[p] + n_items]
    verb_len: np.ndarray  # len(verb) as Python gives it
    verb_ids: np.ndarray  # ids into strings
    strings: list  # part names and states, decoded


def _decode_keys(buf: bytes, starts, ends, esc) -> list:
    out = []
    for s, e, x in zip(starts.tolist(), ends.tolist(), esc.tolist()):
        raw = buf[s:e]
        out.append(json.loads(b'"' + raw + b'"') if x else raw.decode("utf-8"))
    return out


def scan_part_result(data: bytes) -> ScannedParts | None:
    """Arrays of an official part-result file, or None when the file is outside what the scanner
    takes (see the module docstring); then read it with ``json.loads``."""
    b = np.frombuffer(data, np.uint8)
    n_brace, n_quote, non_ascii = _counts(b)
    if non_ascii:
        try:
            data.decode("utf-8")  # json.load of a text file: invalid UTF-8 is an error there
        except UnicodeDecodeError:
            return None
    cap = n_brace + 1
    cap_s = n_quote // 2 + 1
    (status, nv, nf, nh, npt, nvs, nhs, nps, nt, v_s, v_e, v_f0, v_esc, f_s, f_e, f_esc, f_h0, h_box, h_p0,
     p_name, p_box, p_kind, p_v0, p_len, vs, hs_pos, hs_s, hs_e, ps_pos, ps_s, ps_e, t_s, t_e) = _scan(b, cap, cap_s)
    if status != 0:
        return None
    try:
        strings = [data[s:e].decode("utf-8") for s, e in zip(t_s[:nt].tolist(), t_e[:nt].tolist())]
        video_names = _decode_keys(data, v_s[:nv], v_e[:nv], v_esc[:nv])
        frame_names = _decode_keys(data, f_s[:nf], f_e[:nf], f_esc[:nf])
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    h_box, p_box = h_box[:nh], p_box[:npt]
    for arr, pos, ss, ee, k in ((h_box, hs_pos, hs_s, hs_e, nhs), (p_box, ps_pos, ps_s, ps_e, nps)):
        if k:
            flat = arr.reshape(-1)
            for p, s, e in zip(pos[:k].tolist(), ss[:k].tolist(), ee[:k].tolist()):
                flat[p] = float(data[s:e])  # what json.loads does with such a number
    frame_h0 = f_h0[:nf].copy()
    frame_nh = np.diff(np.append(frame_h0, nh))
    human_p0 = h_p0[:nh].copy()
    human_np = np.diff(np.append(human_p0, npt))
    return ScannedParts(video_names, np.append(v_f0[:nv], nf), frame_names, frame_h0, frame_nh, h_box, human_p0,
                        human_np, p_name[:npt].copy(), p_box, p_kind[:npt].copy(), p_v0[:npt].copy(),
                        p_len[:npt].copy(), vs[:nvs].copy(), strings)


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + c)`` for each (s, c)."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    return np.arange(total, dtype=np.int64) + np.repeat(starts - run_starts(counts), counts)


def _part_frames(sc: ScannedParts, frames: np.ndarray | None, uid: np.ndarray, others: dict):
    """:class:`PartFrames` of the frames ``frames`` of a scanned file (None: all, in file order).

    ``uid`` maps the file's string ids to ids shared with the other file; ``others`` numbers the
    states that are lists of other than one string (shared too)."""
    if frames is None:
        f_h0, f_nh, hid = sc.frame_h0, sc.frame_nh, None
        h_p0, h_np = sc.human_p0, sc.human_np
        pid = None
    else:
        f_nh = sc.frame_nh[frames]
        hid = _ranges(sc.frame_h0[frames], f_nh)
        f_h0 = run_starts(f_nh)
        h_np = sc.human_np[hid]
        pid = _ranges(sc.human_p0[hid], h_np)
        h_p0 = run_starts(h_np)
    take = (lambda a: a) if pid is None else (lambda a: a[pid])
    hbox = sc.human_box if hid is None else sc.human_box[hid]
    kind, v0, vlen = take(sc.verb_kind), take(sc.verb_v0), take(sc.verb_len)
    ids = uid[sc.verb_ids] if len(sc.verb_ids) else np.zeros(0, np.int64)
    first = ids[np.minimum(v0, max(len(ids) - 1, 0))] if len(ids) else np.zeros(len(v0), np.int64)
    verb = np.where(kind == 0, first, -1 - first)
    odd = np.flatnonzero((kind == 1) & (vlen != 1))
    for p in odd.tolist():  # lists of 0 or of 2+ states: numbered by the tuple of their states
        key = tuple(ids[v0[p]:v0[p] + vlen[p]].tolist())
        verb[p] = OTHER + others.setdefault(key, len(others))
    pbox = take(sc.part_box)
    return PartFrames(f_h0, f_nh, hbox.astype(np.float32), h_p0, h_np, uid[take(sc.part_name)], pbox,
                      np.ones(len(pbox), bool), verb.astype(np.int64), vlen.astype(np.int64))


def _last_index(names: list, lo: int = 0, hi: int | None = None) -> dict:
    """{name: index} over names[lo:hi]: a repeated key keeps its first place and its last index (json.loads)."""
    out: dict = {}
    for k, name in enumerate(names[lo:hi], lo):
        out[name] = k
    return out


def _read_and_scan(src) -> ScannedParts | None:
    """Scan ``src``: the bytes of a file, or a path to read first."""
    from pathlib import Path

    return scan_part_result(src if isinstance(src, (bytes, bytearray)) else Path(src).read_bytes())


def inputs_from_bytes(gt_data, pred_data, videos, missing_video: str = "error",
                      names=("ground truth", "prediction")):
    """:class:`actparse.metrics.tps_arrays.TPSInputs` from the two official part-result files (their bytes,
    or paths), the same as :func:`actparse.metrics.tps.prepare` gives for ``json.loads`` of them
    (errors included), or None when either file is outside what :func:`scan_part_result` takes.
    The two files are read and scanned at once (two threads: reading and the compiled scan both
    release the GIL). ``names`` label the two files in errors."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        G, P = pool.map(_read_and_scan, (gt_data, pred_data))
    if G is None or P is None:
        return None
    vids = list(videos)
    g_vid, p_vid = _last_index(G.video_names), _last_index(P.video_names)
    g_sel, g_video, p_of = [], [], []
    for vi, vid in enumerate(vids):
        k = g_vid.get(vid)
        if k is None:
            raise ValueError(f"{names[0]} has no part annotations for video {vid!r}")
        gframes = _last_index(G.frame_names, int(G.video_f0[k]), int(G.video_f0[k + 1]))
        kp = p_vid.get(vid)
        if kp is None:
            if missing_video == "error" and any(G.frame_nh[i] for i in gframes.values()):
                raise ValueError(f"{names[1]} has no part results for video {vid!r} "
                                 f"(the official code stops with KeyError)")
            pframes = {}
        else:
            pframes = _last_index(P.frame_names, int(P.video_f0[kp]), int(P.video_f0[kp + 1]))
        g_sel.extend(gframes.values())
        g_video.extend([vi] * len(gframes))
        p_of.extend(pframes.get(name, -1) for name in gframes)
    shared: dict = {}
    g_uid = np.array([shared.setdefault(s, len(shared)) for s in G.strings], np.int64)
    p_uid = np.array([shared.setdefault(s, len(shared)) for s in P.strings], np.int64)
    g_sel = np.asarray(g_sel, np.int64)
    identity = len(g_sel) == len(G.frame_names) and bool((g_sel == np.arange(len(g_sel))).all())
    others: dict = {}
    gt = _part_frames(G, None if identity else g_sel, g_uid, others)
    pred = _part_frames(P, None, p_uid, others)
    return TPSInputs(vids, np.asarray(g_video, np.int64), np.asarray(p_of, np.int64), gt, pred, max(len(shared), 1))
