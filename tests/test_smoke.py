from flask_reqctx import get_request_context, stats


def test_view_sees_its_context_and_caller_sees_none(app, client):
    @app.get("/")
    def index():
        return get_request_context().to_dict()

    body = client.get("/", headers={"X-Request-ID": "abc-123"}).get_json()
    assert body["request_id"] == "abc-123"
    assert get_request_context() is None
    assert stats()["live"] == 0
