"""AppTest of the Activation maximization page on grey data: the grey toggle is on by default
for the (grey) phantom (tests/test_activation_max.py checks that grey AM keeps the channels
equal), and the difference maps state their scale."""
from app_pages import open_page

PAGE = "pages/activation_max.py"


def test_grey_am_is_the_default_on_grey_data_and_maps_state_their_scale():
    at = open_page(PAGE, timeout=240)
    grey = next(t for t in at.toggle if t.key.startswith("am_grey|"))
    assert grey.value is True  # the phantom's three channels are equal
    at.number_input(key="am_steps").set_value(3)
    at.radio(key="am_start").set_value("dataset")
    at.run()
    at.button(key="am_run").click()
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    (run,) = at.session_state["am"]["runs"].values()
    assert run["res"].config.grey is True
    caps = [c.value for c in at.caption]
    assert any(c.startswith("**Scale:** |x_AM − x_0|") and "shared by every target" in c
               for c in caps), caps
