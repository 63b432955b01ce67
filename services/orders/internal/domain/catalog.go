package domain

import "slices"

// Currency of the catalog. One currency per catalog keeps totals meaningful.
const Currency = "EUR"

// Product is a sellable item with its server-side price.
type Product struct {
	SKU            string
	Name           string
	UnitPriceCents int64
	Currency       string
}

// Catalog is the fixed set of products orders may contain.
type Catalog struct {
	products []Product
	bySKU    map[string]Product
}

// NewCatalog builds a catalog; later duplicates of a SKU are ignored.
func NewCatalog(products ...Product) *Catalog {
	c := &Catalog{bySKU: make(map[string]Product, len(products))}
	for _, p := range products {
		if _, dup := c.bySKU[p.SKU]; dup {
			continue
		}
		c.bySKU[p.SKU] = p
		c.products = append(c.products, p)
	}
	return c
}

// SeedCatalog is the contract's catalog.
func SeedCatalog() *Catalog {
	return NewCatalog(
		Product{SKU: "tea-green", Name: "Green tea", UnitPriceCents: 450, Currency: Currency},
		Product{SKU: "tea-black", Name: "Black tea", UnitPriceCents: 390, Currency: Currency},
		Product{SKU: "mug", Name: "Mug", UnitPriceCents: 1200, Currency: Currency},
		Product{SKU: "kettle", Name: "Kettle", UnitPriceCents: 4500, Currency: Currency},
	)
}

// Products returns the products in catalog order.
func (c *Catalog) Products() []Product { return slices.Clone(c.products) }

// Lookup returns the product with the given SKU.
func (c *Catalog) Lookup(sku string) (Product, bool) {
	p, ok := c.bySKU[sku]
	return p, ok
}
