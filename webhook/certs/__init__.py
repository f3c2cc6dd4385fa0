"""The webhook's CA, serving certificate and caBundle: made, kept and rotated.

``rotation`` decides what to issue (pure), ``files`` and ``cluster`` keep it, ``run`` does a
whole ``python -m webhook certs`` (``webhook.cli.certs`` is its command line).

Where things are kept:

- the serving pair in ``--out-dir`` (``tls.crt``, ``tls.key``, ``ca.crt``) and/or in the
  ``kubernetes.io/tls`` Secret ``--secret`` (keys ``tls.crt``, ``tls.key``, ``ca.crt``),
  which the Deployment mounts;
- the CA's certificate and key in ``--out-dir`` (``ca.key``) and/or in the Secret
  ``<--secret>-ca``, which no pod mounts: the running webhook never holds the CA key;
- the CA certificate(s) in the ``caBundle`` of every webhook of the
  MutatingWebhookConfiguration ``--webhook-config``, which the API server trusts. That
  configuration is also the Secrets' owner (``ownerReferences``): deleting it, as
  ``helm uninstall`` or ``kubectl delete -k`` do, lets the garbage collector delete them.

Rerunning rotates without an outage window: the CA is reused while it is valid for more
than ``CA_REUSE_MIN_REMAINING`` and only the serving pair is reissued (the caBundle does
not change, so the API server trusts the new pair the moment the webhook reloads it).
When a new CA is made (``--rotate-ca``, or the old one is close to expiry) the caBundle
is published with both the new and the old CA *before* the new serving pair is written,
and a later run drops the old CA once the new pair has had time to reach every replica.
"""
