// SSH keys of one account, for the operator (any user's) and the tenant
// (their own): list, add a public key, generate a pair (the private key is
// shown and offered as a download once), delete.

import { h, replace, timeAgo } from './dom.js';
import { get, post, del, enc } from './api.js';
import { card, button, table, dialog, field, formBanner, onSubmit, formValue, toast, busy, describeError, confirmDialog, errorBox, loading, copyButton } from './ui.js';
import { downloadText, fileName } from './forms.js';

/** base: '/v1/admin/users/<id>/ssh-keys' or '/v1/user/ssh-keys' */
export function sshKeysCard({ base, ctx, title = 'SSH keys', owner }) {
  const body = h('div', { 'data-test': 'ssh-keys' }, loading());
  const secretSlot = h('div');

  async function reload() {
    try {
      const page = await get(base, { page_size: 100 });
      replace(body, table({
        test: 'ssh-keys-table',
        caption: 'SSH keys',
        emptyText: 'No SSH keys. Add a public key or generate a pair.',
        rows: page.data || [],
        rowAttrs: (k) => ({ 'data-test': 'ssh-key-row', 'data-key-id': k.id }),
        columns: [
          { label: 'Name', cell: (k) => h('span', { class: 'cell-main' }, k.name || '—') },
          { label: 'Type', cell: (k) => h('code', { class: 'mono' }, k.key_type || '—') },
          { label: 'Fingerprint', cell: (k) => h('span', { class: 'kv-inline' }, h('code', { class: 'mono' }, k.fingerprint || '—'), k.public_key ? copyButton(k.public_key, { iconOnly: true, label: 'Copy public key', test: 'ssh-key-copy' }) : null) },
          { label: 'Added', cell: (k) => timeAgo(k.created_at) },
          {
            label: h('span', { class: 'sr-only' }, 'Actions'),
            class: 'col-actions',
            cell: (k) => {
              const b = button('Delete', { small: true, kind: 'danger-soft', icon: 'trash', test: 'ssh-key-delete' });
              b.addEventListener('click', async () => {
                const ok = await confirmDialog({ title: 'Delete SSH key', message: `Delete the key "${k.name || k.fingerprint}"? Logins with it stop working.`, confirmLabel: 'Delete key', danger: true });
                if (!ok) return;
                await busy(b, async () => {
                  try {
                    await del(`${base}/${enc(k.id)}`);
                    toast('SSH key deleted.');
                    reload();
                  } catch (err) {
                    toast(describeError(err), 'error');
                  }
                });
              });
              return b;
            },
          },
        ],
      }));
    } catch (err) {
      if (err.status === 401) return;
      replace(body, errorBox(err, reload));
    }
  }

  const addBtn = button('Add public key', { small: true, icon: 'plus', test: 'ssh-key-add' });
  addBtn.addEventListener('click', () => addKeyDialog(base, reload));
  const genBtn = button('Generate key pair', { small: true, icon: 'key', test: 'ssh-key-generate' });
  genBtn.addEventListener('click', () => generateKeyDialog(base, owner, (key) => {
    reload();
    showPrivateKey(secretSlot, key, owner);
  }));

  reload();
  return card(title, [secretSlot, body], { actions: [addBtn, genBtn], class: 'card-flush', test: 'ssh-keys-card' });
}

function addKeyDialog(base, done) {
  const form = h('form', { novalidate: true, 'data-test': 'ssh-key-add-form' },
    formBanner(),
    field({ label: 'Name', name: 'name', optional: true, placeholder: 'laptop', test: 'ssh-key-name' }),
    field({ label: 'Public key', name: 'public_key', type: 'textarea', required: true, monospace: true, rows: 5, spellcheck: false, placeholder: 'ssh-ed25519 AAAA… user@host', hint: 'One line in OpenSSH form: ed25519, ECDSA, or RSA of 2048 bits or more.', test: 'ssh-key-public' }),
    h('div', { class: 'dialog-actions' },
      button('Cancel', { onClick: () => d.close() }),
      button('Add key', { kind: 'primary', type: 'submit', test: 'ssh-key-add-submit' })));
  // Enter in the textarea submits too (a public key is one line).
  form.querySelector('textarea').addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey) {
      ev.preventDefault();
      form.requestSubmit();
    }
  });
  onSubmit(form, async (fd) => {
    const body = { public_key: formValue(fd, 'public_key') };
    const name = formValue(fd, 'name');
    if (name) body.name = name;
    await post(base, body);
    d.close();
    toast('SSH key added.');
    done();
  });
  const d = dialog({ title: 'Add a public key', body: form, test: 'ssh-key-add-dialog' });
}

function generateKeyDialog(base, owner, done) {
  const form = h('form', { novalidate: true, 'data-test': 'ssh-key-generate-form' },
    formBanner(),
    h('p', { class: 'muted' }, 'The server makes an ed25519 key pair, keeps the public half and hands you the private half once.'),
    field({ label: 'Name', name: 'name', optional: true, placeholder: 'generated', test: 'ssh-key-gen-name' }),
    h('div', { class: 'dialog-actions' },
      button('Cancel', { onClick: () => d.close() }),
      button('Generate', { kind: 'primary', type: 'submit', test: 'ssh-key-generate-submit' })));
  onSubmit(form, async (fd) => {
    const name = formValue(fd, 'name');
    const key = await post(`${base}/generate`, name ? { name } : {});
    d.close();
    done(key);
  });
  const d = dialog({ title: 'Generate a key pair', body: form, test: 'ssh-key-generate-dialog' });
}

function showPrivateKey(slot, key, owner) {
  const name = `id_${fileName(key.name || owner || 'ccp', 'ccp')}`;
  const download = button('Download private key', { kind: 'primary', small: true, icon: 'download', test: 'ssh-private-download' });
  download.addEventListener('click', () => downloadText(name, key.private_key.endsWith('\n') ? key.private_key : `${key.private_key}\n`));
  const dismiss = button('I have saved it', { small: true, test: 'ssh-private-dismiss' });
  dismiss.addEventListener('click', () => replace(slot));
  replace(slot, h('div', { class: 'card-body' }, h('div', { class: 'secret', 'data-test': 'ssh-private-key' },
    h('div', { class: 'secret-head' }, h('strong', null, `Private key for "${key.name || key.fingerprint}"`)),
    h('p', { class: 'secret-note' }, `Shown only this once. Save it as ~/.ssh/${name} with mode 600, then: ssh -i ~/.ssh/${name} …`),
    h('pre', { class: 'mono', 'data-test': 'ssh-private-key-value' }, key.private_key),
    h('div', { class: 'row' }, download, copyButton(key.private_key, { label: 'Copy', test: 'ssh-private-copy' }), dismiss))));
  download.focus();
}

