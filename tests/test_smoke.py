from tests.factories import make_item


async def test_board_shows_a_published_item(client, session):
    item = make_item(session, title="Dark mode for reports")
    response = await client.get("/")
    assert response.status_code == 200
    assert "Dark mode for reports" in response.text
    page = await client.get(f"/items/{item.public_id}")
    assert page.status_code in (200, 301)
