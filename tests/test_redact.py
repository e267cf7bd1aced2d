"""Azure's secrets out of text: connection strings, SAS tokens and URLs, Shared Key signatures, storage options."""

from __future__ import annotations

import json

import pytest

from pipeline.redact import redact_text, redact_url

KEY = "Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmE+/A=="
SIG = "ab%2Fcd%2Bef%3D"


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        (f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={KEY};EndpointSuffix=core.windows.net",
         "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=***;EndpointSuffix=core.windows.net"),
        (f"BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;AccountKey={KEY}",
         "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;AccountKey=***"),
        (f"BlobEndpoint=https://acct.blob.core.windows.net/;SharedAccessSignature=sv=2024-08-04&ss=b&sig={SIG}",
         "BlobEndpoint=https://acct.blob.core.windows.net/;SharedAccessSignature=***"),
        (f"sas token sv=2024-08-04&ss=b&srt=sco&sp=rl&se=2026-01-01T00:00:00Z&sig={SIG} refused",
         "sas token sv=2024-08-04&ss=b&srt=sco&sp=rl&se=2026-01-01T00:00:00Z&sig=*** refused"),
        (f"cannot read https://acct.blob.core.windows.net/c/b.roi?sv=2024-08-04&sig={SIG}: 403",
         "cannot read https://acct.blob.core.windows.net/c/b.roi?sv=***&sig=*** 403"),  # the colon goes with it
        (f"Authorization: SharedKey acct:{KEY[:44]}", "Authorization: SharedKey acct:***"),
        (str({"account_name": "acct", "account_key": KEY, "sas_token": f"sig={SIG}"}),
         "{'account_name': 'acct', 'account_key': '***', 'sas_token': '***'}"),
        (json.dumps({"connection_string": f"AccountName=acct;AccountKey={KEY}", "anon": False}),
         '{"connection_string": "***", "anon": false}'),
    ],
    ids=["connection-string", "azurite-endpoint", "sas-connection-string", "sas-token", "sas-url", "shared-key",
         "options-repr", "options-json"],
)  # fmt: skip
def test_azure_secrets_are_masked_in_text(text: str, kept: str) -> None:
    redacted = redact_text(text)
    assert redacted == kept
    assert KEY not in redacted and SIG not in redacted and KEY[:44] not in redacted


def test_azure_urls_keep_what_they_point_to() -> None:
    assert redact_url("az://container/ifcb/D2024") == "az://container/ifcb/D2024"
    assert redact_url("abfs://c@acct.dfs.core.windows.net/ifcb") == "abfs://c@acct.dfs.core.windows.net/ifcb"
    assert redact_url(f"https://acct.blob.core.windows.net/c/m.zip?se=2026&sig={SIG}") == (
        "https://acct.blob.core.windows.net/c/m.zip?se=***&sig=***"
    )
    text = "a message with no secret: az://c/x, AccountName=acct, signature checks"
    assert redact_text(text) == text
