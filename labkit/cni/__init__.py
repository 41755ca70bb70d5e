"""labkit.cni: the bundled CNI plugin (CNI spec 1.1.0), kept import-free.

`labkit-cni` is exec'd once per pod, so nothing is imported here; import the
module you need:

- `labkit.cni.plugin.execute(command, config, *, container_id, netns, ifname,
  args=None, node_netns=None) -> dict` - the in-process API (raises
  `labkit.cni.errors.CNIError(code, msg, details)`); `labkit.cni.main` is the
  executable around it.
- `labkit.cni.conflist` - render/write the conflist from
  `templates/cni-conflist.json.j2`, and `execute_conflist(...)`, a small libcni.
- `labkit.cni.backends` - host-gw / vxlan node routing and egress masquerade.
- `labkit.cni.install.install_launcher(bin_dir, socket=None)` - the `labkit-cni`
  for a CNI bin dir: sh that hands each call to a CNI server on `socket`, or runs
  the plugin in place in a `python -IS`.
- `labkit.cni.server` - the CNI server (`python -m labkit.cni.server --socket P`):
  the plugin loaded once, each call run in its caller's namespace with its env.
- `labkit.cni.ipam`, `labkit.cni.config`, `labkit.cni.lite` - the standard-library-only
  pieces of the exec path; its netlink is `labkit.net.netlink`, the one every caller uses.
"""
