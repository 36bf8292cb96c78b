// Package campaigntest holds what tests and benchmarks of campaigns share:
// a synthetic host-iterated audience.
package campaigntest

import (
	"context"
	"fmt"
	"strconv"

	"github.com/heraldhq/herald/campaign"
)

// Audience is a host-iterated campaign audience of N synthetic
// recipients (a push token, an email address and a Name variable each),
// 250 a page; the cursor is the next index. The same cursor gives the
// same page, as campaign.Iterator requires.
type Audience struct{ N int }

// Recipient is the i-th recipient.
func (a Audience) Recipient(i int) campaign.Recipient {
	return campaign.Recipient{User: fmt.Sprint("u", i), Token: fmt.Sprintf("token-%07d", i),
		Email: fmt.Sprintf("user%d@example.com", i), Vars: map[string]string{"Name": fmt.Sprint("Ada #", i)}}
}

// Next implements campaign.Iterator.
func (a Audience) Next(_ context.Context, cursor string) ([]campaign.Recipient, string, error) {
	from := 0
	if cursor != "" {
		var err error
		if from, err = strconv.Atoi(cursor); err != nil {
			return nil, "", err
		}
	}
	to := min(from+250, a.N)
	rs := make([]campaign.Recipient, 0, to-from)
	for i := from; i < to; i++ {
		rs = append(rs, a.Recipient(i))
	}
	if to == a.N {
		return rs, "", nil
	}
	return rs, strconv.Itoa(to), nil
}

// Size implements campaign.Sizer.
func (a Audience) Size(context.Context) (int, error) { return a.N, nil }
