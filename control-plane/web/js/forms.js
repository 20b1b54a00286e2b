// Small helpers for form values: local times, generated passwords, files.

/** "2026-05-01T12:30" (the user's local time) → RFC 3339 in UTC. */
export function toIso(local) {
  if (!local) return null;
  const d = new Date(local);
  if (Number.isNaN(d.getTime())) return local;
  return d.toISOString();
}

/** RFC 3339 → the value a datetime-local input takes, in local time. */
export function toLocalInput(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

const ALPHABET = 'ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789';

export function randomPassword(length = 20) {
  const out = [];
  const buf = new Uint32Array(length * 2);
  while (out.length < length) {
    crypto.getRandomValues(buf);
    for (const n of buf) {
      // Reject the top of the range so every character is equally likely.
      if (n < Math.floor(0x100000000 / ALPHABET.length) * ALPHABET.length) out.push(ALPHABET[n % ALPHABET.length]);
      if (out.length === length) break;
    }
  }
  return out.join('');
}

/** Offers text as a file download without it ever touching a server. */
export function downloadText(filename, text, type = 'application/octet-stream') {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = document.createElement('a');
  a.href = url;
  a.download = filename;
  a.rel = 'noopener';
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

/** Integer from a form value, or undefined when empty. */
export function intOrUndef(v) {
  if (v === null || v === undefined) return undefined;
  const s = String(v).trim();
  if (!s) return undefined;
  const n = Number(s);
  return Number.isFinite(n) ? n : s;
}

/** A safe file name from user-provided text. */
export function fileName(text, fallback = 'key') {
  const s = String(text || '').replace(/[^A-Za-z0-9._-]+/g, '_').replace(/^[._]+/, '').slice(0, 60);
  return s || fallback;
}
