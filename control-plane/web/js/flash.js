// One-time values handed from one page to the next (a new host's SSH
// password, the task an action started). Kept in memory only: a reload
// forgets them, as a secret shown once should be.

const store = new Map();

export function putFlash(key, value) {
  store.set(key, value);
}

export function takeFlash(key) {
  const v = store.get(key);
  store.delete(key);
  return v;
}
