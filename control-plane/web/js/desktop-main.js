// Entry of desktop.html, the standalone desktop viewer the VNC routes
// redirect to: ?scope=admin|user&host=<id>. Its WebSocket is authorised by
// the dashboard session cookie or by the ccp_vnc cookie of a vnc-session.

import { h, replace } from './dom.js';
import { mount } from './desktop.js';

const root = document.getElementById('desktop');
const params = new URLSearchParams(location.search);
const scope = params.get('scope');
const hostId = params.get('host') || '';

if ((scope !== 'admin' && scope !== 'user') || !/^[A-Za-z0-9_-]{1,64}$/.test(hostId)) {
  replace(root, h('div', { class: 'boot' }, h('div', { class: 'alert alert-error', role: 'alert' },
    h('span', null, 'This address does not name a host. '), h('a', { href: '/' }, 'Open the dashboard'))));
} else {
  document.title = 'Desktop · Cloud CLI Proxy';
  mount(root, {
    scope,
    hostId,
    backHref: `/#/hosts/${encodeURIComponent(hostId)}`,
    backLabel: 'Dashboard',
    title: 'Desktop',
  });
}
