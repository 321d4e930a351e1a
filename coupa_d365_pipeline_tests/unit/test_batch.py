from coupa_d365_pipeline.d365.batch import BatchOperation, Changeset, encode_batch, parse_batch_response


def test_encode_batch_assigns_content_ids_and_uses_crlf():
    cs = Changeset(
        [
            BatchOperation("POST", "VendorInvoiceHeaders", {"dataAreaId": "usmf"}),
            BatchOperation("POST", "VendorInvoiceLines", {"dataAreaId": "usmf", "InvoiceLineNumber": 1}),
        ]
    )
    content_type, body = encode_batch("https://env.example", [cs])
    text = body.decode()
    assert content_type.startswith("multipart/mixed; boundary=batch_")
    assert "\r\nContent-ID: 1\r\n" in text and "\r\nContent-ID: 2\r\n" in text
    assert "POST https://env.example/data/VendorInvoiceLines HTTP/1.1" in text
    assert text.count("--changeset_") == 3  # two parts + closing delimiter
    assert [op.content_id for op in cs.operations] == ["1", "2"]


RESPONSE = (
    "--batchresponse_1\r\n"
    "Content-Type: multipart/mixed; boundary=changesetresponse_2\r\n\r\n"
    "--changesetresponse_2\r\n"
    "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\nContent-ID: 1\r\n\r\n"
    "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json; odata.metadata=minimal\r\n\r\n"
    '{"error":{"code":"","message":"An error has occurred.","innererror":{"message":"Write failed. '
    'The record already exists..","type":"Microsoft.Dynamics.'
    'Platform.Integration.Services.OData.AxODataWriteException"}}}\r\n'
    "--changesetresponse_2--\r\n"
    "--batchresponse_1\r\n"
    "Content-Type: multipart/mixed; boundary=changesetresponse_3\r\n\r\n"
    "--changesetresponse_3\r\n"
    "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\nContent-ID: 2\r\n\r\n"
    "HTTP/1.1 201 Created\r\nLocation: https://env/data/X(dataAreaId='usmf',K='1')\r\n\r\n"
    '{"dataAreaId":"usmf","K":"1"}\r\n'
    "--changesetresponse_3\r\n"
    "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\nContent-ID: 3\r\n\r\n"
    "HTTP/1.1 204 No Content\r\n\r\n\r\n"
    "--changesetresponse_3--\r\n"
    "--batchresponse_1--\r\n"
)


def test_parse_batch_response_reads_every_part():
    parts = parse_batch_response("multipart/mixed; boundary=batchresponse_1", RESPONSE.encode())
    assert [(p.content_id, p.status) for p in parts] == [("1", 500), ("2", 201), ("3", 204)]
    assert "already exists" in parts[0].body["error"]["innererror"]["message"]
    assert parts[1].body == {"dataAreaId": "usmf", "K": "1"}
    assert parts[1].headers["location"].endswith("K='1')")
    assert parts[2].body is None and parts[2].ok and not parts[0].ok


def test_encode_batch_sends_decimals_exactly():
    from decimal import Decimal

    cs = Changeset(
        [
            BatchOperation(
                "POST", "VendorInvoiceLines", {"Amount": Decimal("12345678901234567.89"), "UnitPrice": Decimal("0.1")}
            )
        ]
    )
    _, body = encode_batch("https://env.example", [cs])
    assert b'{"Amount":12345678901234567.89,"UnitPrice":0.1}' in body
