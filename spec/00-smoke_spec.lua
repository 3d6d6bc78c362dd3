local helpers = require("spec.helpers")

describe("the module", function()
  it("loads and has a version", function()
    local dn = helpers.dn()
    assert.is_string(dn._VERSION)
  end)
end)
